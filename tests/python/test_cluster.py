"""Clients against a cluster gateway, exactly as against a host: the
independent client written from docs/protocol.md (aioquic + msgpack) and
the `tensorgate` package, through a real nats-server engine, one gateway
and one worker on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine import NATS_SERVER, start_engine, stop, wait_for

ROOT = Path(__file__).resolve().parents[2]
HOST_BIN = ROOT / "target" / "release" / "tensorgate-host"
REPOSITORY = ROOT / "target" / "repository"
CLIENT = Path(__file__).resolve().parent / "minimal_client.py"
SAMPLE = ROOT / "plugins" / "tabular" / "samples" / "jet-0.json"
REFERENCE = ROOT / "plugins" / "tabular" / "reference.json"
TIMEOUT_S = 60


class Gateway:
    def __init__(self, proc: subprocess.Popen, state: Path):
        self.proc = proc
        self.address = (state / "listening").read_text().strip()
        self.fingerprint = (state / "fingerprint").read_text().strip()


@contextlib.contextmanager
def cluster(work: Path, gateways: int):
    """An engine, one worker and `gateways` gateways; yields the gateways."""
    for path in (HOST_BIN, REPOSITORY, NATS_SERVER):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/setup")
    procs = []
    try:
        url = start_engine(work, procs)
        roles = [("worker", ["worker", "--repository", str(REPOSITORY), "--threads", "1"])]
        roles += [(f"gateway{i}", ["gateway", "--listen", "127.0.0.1:0"]) for i in range(gateways)]
        found = []
        for role, args in roles:
            state = work / role
            state.mkdir()
            log = work / f"{role}.log"
            with open(log, "wb") as f:
                procs.append(subprocess.Popen([str(HOST_BIN), args[0], "--nats", url, "--heartbeat-ms", "200", "--state-dir", str(state), *args[1:]],
                                              stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            wait_for(state / ("worker" if role == "worker" else "listening"), procs[-1], role, log)
            if role != "worker":
                found.append(Gateway(procs[-1], state))
        yield found
    finally:
        stop(procs)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """(address, fingerprint) of a gateway with one worker behind it."""
    with cluster(tmp_path_factory.mktemp("cluster"), 1) as gateways:
        yield gateways[0].address, gateways[0].fingerprint


def test_the_independent_client_works_against_a_gateway(gateway):
    address, fingerprint = gateway
    reference = json.loads(REFERENCE.read_text())
    out = subprocess.run([sys.executable, str(CLIENT), "--host", address, "--fingerprint", fingerprint,
                          "--model", "tabular", "--timeout", "30", str(SAMPLE)],
                         capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    assert out.returncode == 0, f"client failed ({out.returncode}):\n{out.stderr}\n{out.stdout}"
    reply = json.loads(out.stdout)
    assert reply["errors"] == []
    scores = reply["results"][0]["value"]
    for label in reference["labels"]:
        assert abs(scores[label] - reference["cases"][0]["scores"][label]) <= 1e-5
    assert (reply["summary"]["model"], reply["summary"]["ok"]) == ("tabular", 1)


def test_the_python_package_works_against_a_gateway(gateway):
    import tensorgate

    address, fingerprint = gateway
    reference = json.loads(REFERENCE.read_text())
    with tensorgate.Client(address, fingerprint=fingerprint) as client:
        results = client.predict("tabular", [c["request"] for c in reference["cases"]])
        assert len(results) == len(reference["cases"])
        for got, case in zip(results, reference["cases"]):
            for label in reference["labels"]:
                assert abs(got[label] - case["scores"][label]) <= 1e-5
        status = client.status()
        assert status["role"] == "gateway"
        assert len(status["workers"]) == 1 and "tabular/1" in status["workers"][0]["models"]
        with pytest.raises(tensorgate.RequestError) as e:
            client.predict("nope", [{}])
        assert "no worker serves model `nope`" in str(e.value)


def test_a_client_given_two_gateways_survives_losing_one(tmp_path):
    import tensorgate

    reference = json.loads(REFERENCE.read_text())
    requests = [c["request"] for c in reference["cases"]]
    with cluster(tmp_path, 2) as (g1, g2):
        client = tensorgate.Client([g1.address, g2.address], fingerprint=[g1.fingerprint, g2.fingerprint])
        with client:
            assert len(client.predict("tabular", requests)) == len(requests)  # through g1
            g1.proc.kill()
            g1.proc.wait(timeout=10)
            # The connection to g1 is dead: the request is resubmitted through g2.
            results = client.predict("tabular", requests)
            assert len(results) == len(requests)
            for got, case in zip(results, reference["cases"]):
                for label in reference["labels"]:
                    assert abs(got[label] - case["scores"][label]) <= 1e-5
