"""The Grafana dashboard (deploy/grafana): every metric its PromQL queries
name is exported by the real binaries, read from their live /metrics: a
host that served items and ran two canary trials (one promoted, one rolled
back), and a cluster (engine, worker, gateway) that served items through
the gateway. Also its provisioning files and the ConfigMap the
kustomization makes of it, validated offline."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from engine import NATS_SERVER, free_port, start_engine, stop, wait_for

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "tensorgate.json"
HOST_BIN = ROOT / "target" / "release" / "tensorgate-host"
GATEWAY_BIN = ROOT / "target" / "release" / "tensorgate-gateway"
CLI = ROOT / "target" / "release" / "tensorgate"
SAMPLE = ROOT / "plugins" / "tabular" / "samples" / "jet-0.json"
REPOSITORY = ROOT / "target" / "repository"
REFERENCE = ROOT / "plugins" / "tabular" / "reference.json"
METRIC = re.compile(r"\btensorgate_[a-z0-9_]+")


def queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return found


def scrape(port: int) -> dict[str, float]:
    """`name{labels}` -> value from a live /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def names(samples: dict[str, float]) -> set[str]:
    return {k.split("{")[0] for k in samples}


def wait_metric(port: int, key: str, check=lambda v: True, timeout_s: float = 30) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        m = scrape(port)
        if key in m and check(m[key]):
            return m
        assert time.monotonic() < deadline, f"{key} not as expected on :{port}: {sorted(m)}"
        time.sleep(0.1)


def start(cmd: list[str], state: Path, log: Path, procs: list, ready: str) -> subprocess.Popen:
    state.mkdir(exist_ok=True)
    with open(log, "wb") as f:
        procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    wait_for(state / ready, procs[-1], cmd[1], log)
    return procs[-1]


def test_the_dashboard_is_well_formed():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "tensorgate"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}", "every panel asks the dashboard's data source variable"
        for t in p["targets"]:
            e = t["expr"]
            assert e.count("(") == e.count(")") and e.count("{") == e.count("}"), e
            assert METRIC.search(e), f"{p['title']}: {e} names no tensorgate metric"
    # What the issue asks the dashboard to show.
    text = " ".join(queries())
    for metric in ("tensorgate_items_total", "tensorgate_item_seconds_bucket", "tensorgate_forward_seconds_bucket",
                   "tensorgate_batch_rows_bucket", "tensorgate_queue_depth", "tensorgate_cluster_queued_messages",
                   "tensorgate_promotions_total", "tensorgate_rollbacks_total", "tensorgate_cluster_workers",
                   "tensorgate_cluster_redeliveries_total", "tensorgate_cluster_worker_events_total"):
        assert metric in text, f"the dashboard shows {metric}"


def test_the_provisioning_files_and_the_configmap():
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "tensorgate.yaml").read_text())
    assert provider["apiVersion"] == 1
    assert [p["type"] for p in provider["providers"]] == ["file"]
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert [d["type"] for d in datasource["datasources"]] == ["prometheus"]
    prom = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    assert {j["job_name"] for j in prom["scrape_configs"]} == {"tensorgate", "tensorgate-pods"}
    kust = yaml.safe_load((GRAFANA / "kustomization.yaml").read_text())
    [gen] = kust["configMapGenerator"]
    files = {Path(f).name: (GRAFANA / f).read_text() for f in gen["files"]}
    assert list(files) == ["tensorgate.json"]
    # The ConfigMap kustomize makes of it, built here as kustomize would.
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": gen["name"], "namespace": kust["namespace"], "labels": kust["generatorOptions"]["labels"]},
                 "data": files}
    kubernetes_validate.validate(configmap, "1.32.0", strict=True)
    assert len(json.dumps(configmap)) < 256 * 1024, "fits a ConfigMap's annotation-free apply"
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        out = subprocess.run([kubectl, "kustomize", str(GRAFANA)], check=True, capture_output=True, text=True).stdout
        [rendered] = [d for d in yaml.safe_load_all(out) if d]
        assert rendered["data"] == configmap["data"] and rendered["metadata"]["labels"] == configmap["metadata"]["labels"]


def test_every_dashboard_metric_is_exported_by_the_live_binaries(tmp_path):
    import tensorgate

    for path in (HOST_BIN, GATEWAY_BIN, REPOSITORY, NATS_SERVER):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/setup")
    reference = json.loads(REFERENCE.read_text())
    good = [c["request"] for c in reference["cases"]]
    exported: dict[str, set[str]] = {}
    procs: list = []
    try:
        # A host: items, then a good version's trial (promoted) and a bad one's (rolled back).
        repo = tmp_path / "repo"
        shutil.copytree(REPOSITORY / "tabular" / "1", repo / "tabular" / "1")
        host_port = free_port()
        start([str(HOST_BIN), "serve", "--repository", str(repo), "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "host"),
               "--metrics-listen", f"127.0.0.1:{host_port}", "--canary-share", "0.5", "--canary-items", "8"],
              tmp_path / "host", tmp_path / "host.log", procs, "fingerprint")
        address = (tmp_path / "host" / "listening").read_text().strip()
        fingerprint = (tmp_path / "host" / "fingerprint").read_text().strip()
        manifest = (repo / "tabular" / "1" / "manifest.toml").read_text()
        with tensorgate.Client(address, fingerprint=fingerprint) as client:
            client.predict("tabular", good)
            for version, text in ((2, manifest), (3, manifest.replace('"jet_axis2"]', '"jet_axis3"]'))):
                shutil.copytree(repo / "tabular" / "1", repo / "tabular" / str(version))
                (repo / "tabular" / str(version) / "manifest.toml").write_text(text.replace("version = 1", f"version = {version}"))
                client.reload("tabular")
                counter = "tensorgate_promotions_total" if version == 2 else "tensorgate_rollbacks_total"
                deadline = time.monotonic() + 30
                while not any(k.startswith(counter) for k in scrape(host_port)):
                    assert time.monotonic() < deadline, f"no {counter} after version {version}'s trial:\n{(tmp_path / 'host.log').read_text()}"
                    client.predict("tabular", good, errors="return")
        m = wait_metric(host_port, 'tensorgate_rollbacks_total{model="tabular",cause="canary"}', lambda v: v == 1)
        assert m['tensorgate_promotions_total{model="tabular"}'] == 1
        exported["host"] = names(m)

        # A cluster: engine, worker and gateway, each role with its metrics.
        url = start_engine(tmp_path, procs)
        worker_port, gateway_port = free_port(), free_port()
        common = ["--nats", url, "--heartbeat-ms", "200"]
        start([str(HOST_BIN), "worker", *common, "--repository", str(REPOSITORY), "--threads", "1", "--state-dir", str(tmp_path / "worker"),
               "--metrics-listen", f"127.0.0.1:{worker_port}"], tmp_path / "worker", tmp_path / "worker.log", procs, "worker")
        start([str(GATEWAY_BIN), *common, "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "gateway"),
               "--metrics-listen", f"127.0.0.1:{gateway_port}"], tmp_path / "gateway", tmp_path / "gateway.log", procs, "fingerprint")
        address = (tmp_path / "gateway" / "listening").read_text().strip()
        fingerprint = (tmp_path / "gateway" / "fingerprint").read_text().strip()
        g = wait_metric(gateway_port, 'tensorgate_cluster_workers{model="tabular"}', lambda v: v == 1)
        with tensorgate.Client(address, fingerprint=fingerprint) as client:
            assert len(client.predict("tabular", good)) == len(good)
        g = wait_metric(gateway_port, 'tensorgate_requests_total{model="tabular",status="ok",protocol="quic"}', lambda v: v == 1)
        assert g['tensorgate_cluster_worker_events_total{event="joined"}'] == 1
        assert g['tensorgate_cluster_queued_messages{model="tabular",version="1"}'] == 0, "all answered, nothing queued"
        w = wait_metric(worker_port, 'tensorgate_items_total{model="tabular",status="ok"}', lambda v: v == len(good))
        assert w['tensorgate_cluster_redeliveries_total{model="tabular"}'] == 0
        assert 'tensorgate_cluster_items_dropped_total{reason="gateway_gone"}' in w
        exported["gateway"], exported["worker"] = names(g), names(w)
    finally:
        stop(procs)

    everything = set().union(*exported.values())
    missing = {(q, n) for q in queries() for n in METRIC.findall(q) if n not in everything}
    assert not missing, f"queries name metrics no binary exports: {sorted(missing)}"
    # The cluster's own metrics come from the cluster roles, not from a host.
    assert {n for n in everything if n.startswith("tensorgate_cluster_")} <= exported["gateway"] | exported["worker"]
    assert not any(n.startswith("tensorgate_cluster_") for n in exported["host"])



def test_a_message_redelivered_after_its_worker_froze_is_counted(tmp_path):
    """Worker A takes a message and freezes (SIGSTOP) before answering it;
    after --redeliver-after-ms the engine delivers it again, to worker B,
    which answers it and counts the redelivery."""
    for path in (HOST_BIN, GATEWAY_BIN, CLI, REPOSITORY, NATS_SERVER):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/setup")
    procs: list = []
    frozen = None
    try:
        monitor, metrics = free_port(), free_port()
        url = start_engine(tmp_path, procs, monitor)
        # One application: the consumer A makes, with A's 1 s redelivery, is the one used.
        repo = tmp_path / "repo"
        shutil.copytree(REPOSITORY / "tabular" / "1", repo / "tabular" / "1")
        common = ["--nats", url, "--redeliver-after-ms", "1000"]
        frozen = start([str(HOST_BIN), "worker", *common, "--repository", str(repo), "--threads", "1", "--state-dir", str(tmp_path / "a")],
                       tmp_path / "a", tmp_path / "a.log", procs, "worker")
        start([str(GATEWAY_BIN), *common, "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "gateway")],
              tmp_path / "gateway", tmp_path / "gateway.log", procs, "fingerprint")
        gateway = tmp_path / "gateway"
        submit = [str(CLI), "--host", (gateway / "listening").read_text().strip(), "--fingerprint",
                  (gateway / "fingerprint").read_text().strip(), "submit", "--model", "tabular", str(SAMPLE)]
        deadline = time.monotonic() + 30
        while subprocess.run(submit, capture_output=True, timeout=30).returncode != 0:
            assert time.monotonic() < deadline, "the gateway never routed to A"
            time.sleep(0.2)

        def consumer() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/jsz?consumers=true", timeout=5) as r:
                jsz = json.load(r)
            return next(c for a in jsz["account_details"] for s in a["stream_detail"] for c in s.get("consumer_detail") or []
                        if c["name"] == "tg-tabular-1")

        # A always has a pull waiting (1 s long): frozen right then, the item is
        # delivered to it and never acknowledged. If its pull had just ended, the
        # item waits undelivered instead: let A answer it and try again.
        for _ in range(5):
            frozen.send_signal(signal.SIGSTOP)
            client = subprocess.Popen(submit, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 0.8
            c = consumer()
            while c["num_ack_pending"] == 0 and c["num_pending"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
                c = consumer()
            if c["num_ack_pending"] >= 1:
                break
            frozen.send_signal(signal.SIGCONT)
            client.communicate(timeout=30)
            time.sleep(0.3)
        else:
            pytest.fail(f"no item was ever delivered to the frozen worker: {c}")
        start([str(HOST_BIN), "worker", *common, "--repository", str(repo), "--threads", "1", "--state-dir", str(tmp_path / "b"),
               "--metrics-listen", f"127.0.0.1:{metrics}"], tmp_path / "b", tmp_path / "b.log", procs, "worker")
        _, err = client.communicate(timeout=30)
        assert client.returncode == 0, f"B answered the redelivered item: {err.decode()}"
        m = wait_metric(metrics, 'tensorgate_cluster_redeliveries_total{model="tabular"}', lambda v: v >= 1)
        assert m['tensorgate_items_total{model="tabular",status="ok"}'] >= 1
    finally:
        if frozen is not None and frozen.poll() is None:
            frozen.send_signal(signal.SIGCONT)
        stop(procs)
