"""`train --upload` through a cluster gateway: a real nats-server engine, one
worker over an empty repository, one gateway, all on 127.0.0.1; the bundle
goes into the fleet, the worker converges on it, and the gateway serves it
with the plugin running the spec (the same answers as the bundle's reference)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch comes with scripts/setup-python (the torch-venv .pth)")

import tensorgate  # noqa: E402
from engine import NATS_SERVER, start_engine, stop, wait_for  # noqa: E402
from test_train import HOST_BIN, PLUGIN, doc_block, spec_text  # noqa: E402

SERVE_TIMEOUT_S = 60


def test_train_uploads_through_a_gateway(nanoaod, tmp_path):
    for path in (HOST_BIN, NATS_SERVER, PLUGIN):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/setup")
    procs: list = []
    try:
        url = start_engine(tmp_path, procs)
        repo = tmp_path / "worker-repo"
        repo.mkdir()
        gw_state = None
        for role, args in (("worker", ["worker", "--repository", str(repo), "--threads", "1"]),
                           ("gateway", ["gateway", "--listen", "127.0.0.1:0"])):
            state = tmp_path / role
            state.mkdir()
            log = tmp_path / f"{role}.log"
            with open(log, "wb") as f:
                procs.append(subprocess.Popen([str(HOST_BIN), args[0], "--nats", url, "--heartbeat-ms", "200",
                                               "--state-dir", str(state), *args[1:]],
                                              stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            wait_for(state / ("worker" if role == "worker" else "listening"), procs[-1], role, log)
            gw_state = state
        address = (gw_state / "listening").read_text().strip()
        fp = (gw_state / "fingerprint").read_text().strip()

        spec = tmp_path / "jets.toml"
        spec.write_text(spec_text(nanoaod))
        (tmp_path / "models.py").write_text(doc_block("python", "# models.py"))
        bundle = tmp_path / "dy-tt"
        cmd = [sys.executable, "-m", "tensorgate", "--fingerprint", fp, "train", "--spec", str(spec),
               "--model", "models.py:JetNet", "--epochs", "2", "--batch-size", "32", "--seed", "2",
               "--bundle", str(bundle), "--plugin", str(PLUGIN), "--upload", address]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["upload"] is not None

        sample = dict(np.load(bundle / "samples" / "events.npz"))
        ref = np.load(bundle / "reference.npz")["scores"]
        with tensorgate.Client(address, fingerprint=fp) as client:
            deadline = time.monotonic() + SERVE_TIMEOUT_S
            while True:  # the worker converges on the fleet's new model
                try:
                    served = client.predict("dy-tt", [sample])[0]
                    break
                except tensorgate.TensorgateError as e:
                    if time.monotonic() > deadline:
                        pytest.fail(f"dy-tt not served through the gateway after {SERVE_TIMEOUT_S} s: {e}\n"
                                    f"{(tmp_path / 'worker.log').read_text()[-3000:]}")
                    time.sleep(0.2)
            np.testing.assert_allclose(served["scores"], ref, rtol=1e-5, atol=1e-6)
            assert any(m["name"] == "dy-tt" for m in client.models())
    finally:
        stop(procs)
