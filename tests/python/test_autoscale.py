"""Autoscaling (deploy/k8s/autoscale, deploy/slurm/scale-out): the KEDA
ScaledObject and the HPA fallback checked offline against the Kubernetes
schemas and KEDA's nats-jetstream trigger fields, and against a live
engine: the stream and consumers the ScaledObject names are the ones a
real worker makes, the HPA's metric is one a real worker exports, and the
Slurm scale-out script, reading a real queue (the worker stopped with
SIGSTOP while items arrive), asks for more workers within its bounds and
for none once the queue is drained."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from engine import NATS_SERVER, free_port, start_engine, stop, wait_for

ROOT = Path(__file__).resolve().parents[2]
AUTOSCALE = ROOT / "deploy" / "k8s" / "autoscale"
K8S = ROOT / "deploy" / "k8s"
SCALE_OUT = ROOT / "deploy" / "slurm" / "scale-out"
HOST_BIN = ROOT / "target" / "release" / "tensorgate-host"
CLI = ROOT / "target" / "release" / "tensorgate"
REPOSITORY = ROOT / "target" / "repository"
SAMPLE = ROOT / "plugins" / "tabular" / "samples" / "jet-0.json"
K8S_VERSION = "1.32.0"
# KEDA v1alpha1 ScaledObject spec fields and the nats-jetstream trigger's metadata (keda.sh/docs/scalers/nats-jetstream).
SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
                      "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
JETSTREAM_METADATA = {"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold",
                      "activationLagThreshold", "useHttps"}


def doc(path: Path) -> dict:
    [d] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return d


def k8s(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def test_the_scaled_object_targets_the_workers_on_the_engine_monitoring_port():
    so = doc(AUTOSCALE / "keda.yaml")
    assert (so["apiVersion"], so["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    spec = so["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC, set(spec) - SCALED_OBJECT_SPEC
    [worker] = k8s("worker.yaml")
    assert spec["scaleTargetRef"] == {"name": worker["metadata"]["name"]} and worker["kind"] == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], "never 0: with no worker nothing queues"
    # KEDA hands `behavior` to the HPA it makes: valid as an HPA's.
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "keda-hpa-worker"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}, "maxReplicas": 16,
                    "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]}}
    kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
    service = next(d for d in k8s("nats.yaml") if d["kind"] == "Service")
    config = next(d for d in k8s("nats.yaml") if d["kind"] == "ConfigMap")["data"]["nats.conf"]
    assert "http_port: 8222" in config
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    assert so["metadata"]["namespace"] == namespace
    assert spec["triggers"]
    for t in spec["triggers"]:
        assert t["type"] == "nats-jetstream"
        meta = t["metadata"]
        assert set(meta) <= JETSTREAM_METADATA and {"natsServerMonitoringEndpoint", "stream", "consumer", "lagThreshold"} <= set(meta)
        host, port = meta["natsServerMonitoringEndpoint"].rsplit(":", 1)
        assert host == f"{service['metadata']['name']}.{namespace}.svc.cluster.local"
        assert int(port) in [p["port"] for p in service["spec"]["ports"]]
        assert all(isinstance(v, str) for v in meta.values()), "KEDA's metadata values are strings"
        assert int(meta["lagThreshold"]) >= 1 and int(meta.get("activationLagThreshold", "0")) >= 0


def test_the_hpa_fallback_is_valid_and_targets_the_workers():
    hpa = doc(AUTOSCALE / "hpa.yaml")
    kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
    [worker] = k8s("worker.yaml")
    assert hpa["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]] == ["tensorgate_queue_depth"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The workers serve the metric the HPA reads.
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--metrics-listen" in args


def scale_out(monitor: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(SCALE_OUT), "--monitor", monitor, "--dry-run", *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_scale_out_reads_a_real_queue_and_stays_within_its_bounds(tmp_path):
    for path in (HOST_BIN, CLI, REPOSITORY, NATS_SERVER):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/setup")
    monitor_port, metrics_port = free_port(), free_port()
    monitor = f"http://127.0.0.1:{monitor_port}"
    procs: list = []
    worker = None
    try:
        url = start_engine(tmp_path, procs, monitor_port)
        for role, args, ready in (
            ("worker", ["worker", "--repository", str(REPOSITORY), "--threads", "1", "--metrics-listen", f"127.0.0.1:{metrics_port}"], "worker"),
            ("gateway", ["gateway", "--listen", "127.0.0.1:0"], "fingerprint"),
        ):
            (tmp_path / role).mkdir()
            log = tmp_path / f"{role}.log"
            with open(log, "wb") as f:
                procs.append(subprocess.Popen([str(HOST_BIN), args[0], "--nats", url, "--state-dir", str(tmp_path / role), *args[1:]],
                                              stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            wait_for(tmp_path / role / ready, procs[-1], role, log)
        worker = procs[1]
        gateway = tmp_path / "gateway"
        address, fingerprint = (gateway / "listening").read_text().strip(), (gateway / "fingerprint").read_text().strip()
        cli = [str(CLI), "--host", address, "--fingerprint", fingerprint]
        deadline = time.monotonic() + 30
        while subprocess.run([*cli, "submit", "--model", "tabular", str(SAMPLE)], capture_output=True, timeout=30).returncode != 0:
            assert time.monotonic() < deadline, "the gateway never served tabular"
            time.sleep(0.2)

        # The names the ScaledObject gives are the engine's, as a real worker made them.
        with urllib.request.urlopen(f"{monitor}/jsz?accounts=true&streams=true&consumers=true", timeout=5) as r:
            jsz = json.load(r)
        consumers = {(a["name"], s["name"], c["name"]) for a in jsz["account_details"] for s in a.get("stream_detail") or []
                     for c in s.get("consumer_detail") or []}
        for t in doc(AUTOSCALE / "keda.yaml")["spec"]["triggers"]:
            m = t["metadata"]
            assert (m["account"], m["stream"], m["consumer"]) in consumers, sorted(consumers)
        assert "# TYPE tensorgate_queue_depth gauge" in urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode(), "the HPA's metric"

        # An idle queue: the floor, nothing more.
        out = scale_out(monitor, "--jobs", "0", "--min", "1")
        assert "0 message(s) waiting, 0 worker job(s), submitting 1" in out and out.count("would run:") == 1

        # The worker stops pulling (its last pull expires within 1 s) while requests arrive.
        worker.send_signal(signal.SIGSTOP)
        time.sleep(1.5)
        submit = subprocess.Popen([*cli, "submit", "--model", "tabular", "--concurrency", "16", "--items-per-request", "1",
                                   *[str(SAMPLE)] * 16], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            line = scale_out(monitor, "--jobs", "1", "--lag-per-worker", "1", "--max", "3", "--max-submit", "8").splitlines()[0]
            queued = int(line.split()[1])
            if queued >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert queued >= 4, line
        # ceil(waiting / 1) > 3 workers wanted: bounded by --max 3, one job already there.
        out = scale_out(monitor, "--jobs", "1", "--lag-per-worker", "1", "--max", "3", "--max-submit", "8")
        assert out.count("would run: sbatch --job-name tensorgate-worker") == 2, out
        out = scale_out(monitor, "--jobs", "1", "--lag-per-worker", "1", "--max", "30", "--max-submit", "1")
        assert out.count("would run:") == 1, "--max-submit bounds one round"
        wanted = math.ceil(queued / 8)
        out = scale_out(monitor, "--jobs", "0", "--lag-per-worker", "8", "--max", "30", "--max-submit", "30")
        assert out.count("would run:") >= min(wanted, 30), out

        # The worker resumes: every item is answered and the queue drains.
        worker.send_signal(signal.SIGCONT)
        _, err = submit.communicate(timeout=60)
        assert submit.returncode == 0, err.decode()
        out = scale_out(monitor, "--jobs", "2", "--lag-per-worker", "1")
        assert out.startswith("scale-out: 0 message(s) waiting, 2 worker job(s), submitting 0"), out
    finally:
        if worker is not None and worker.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)
        stop(procs)
