"""Model management and tokens from Python (tensorgate.Client.models /
upload / fetch / delete / reload / promote / rollback, token=) against real hosts with their own
scratch repositories (so target/repository is never changed)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import engine
import tensorgate
from conftest import HOST_BIN, REPOSITORY, STARTUP_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]
MULTI = ROOT / "plugins" / "tensors" / "bundles" / "multi-io"
TOKEN = "python-admin-token"


def start_host(tmp: Path, access: str | None = None):
    repo, state = tmp / "repo", tmp / "state"
    (repo / "multi-io").mkdir(parents=True)
    shutil.copytree(REPOSITORY / "multi-io" / "1", repo / "multi-io" / "1")
    state.mkdir()
    cmd = [str(HOST_BIN), "serve", "--repository", str(repo), "--listen", "127.0.0.1:0", "--state-dir", str(state)]
    if access is not None:
        (tmp / "access.toml").write_text(access)
        cmd += ["--access", str(tmp / "access.toml")]
    log = open(tmp / "host.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not ((state / "listening").exists() and (state / "fingerprint").exists()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"host did not start:\n{(tmp / 'host.log').read_text()}")
        time.sleep(0.05)
    time.sleep(0.05)
    return proc, (state / "listening").read_text().strip(), (state / "fingerprint").read_text().strip(), repo


def stop(proc):
    engine.stop([proc])


@pytest.fixture()
def loopback_host(tmp_path):
    proc, address, fp, repo = start_host(tmp_path)
    yield address, fp, repo
    stop(proc)


def test_models_fetch_upload_delete_reload(loopback_host, tmp_path):
    address, fp, repo = loopback_host
    sample, ref = np.load(MULTI / "sample.npz"), np.load(MULTI / "reference.npz")
    with tensorgate.Client(address, fingerprint=fp) as client:  # loopback: admin without credentials
        models = client.models()
        assert [(m["name"], m["version"], m["state"]) for m in models] == [("multi-io", 1, "ready")]

        archive = client.fetch("multi-io", path=tmp_path / "multi-io.tar.zst")
        assert archive[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
        assert (tmp_path / "multi-io.tar.zst").read_bytes() == archive

        with pytest.raises(tensorgate.RequestError) as info:  # same name and version again
            client.upload(tmp_path / "multi-io.tar.zst")
        assert info.value.code == "conflict"

        v2 = tmp_path / "multi-io-v2"
        shutil.copytree(repo / "multi-io" / "1", v2)
        manifest = (v2 / "manifest.toml").read_text().replace("version = 1", "version = 2")
        (v2 / "manifest.toml").write_text(manifest)
        reply = client.upload(v2)
        assert [(m["name"], m["version"]) for m in reply["models"]] == [("multi-io", 2)]
        out = client.predict("multi-io", {"x": sample["x"], "y": sample["y"]}, version=2)
        np.testing.assert_allclose(out["h"], ref["h"], rtol=1e-5, atol=1e-6)
        assert out.summary["version"] == 2

        # Roll the default back to 1, then promote 2 again.
        reply = client.rollback("multi-io")
        assert [m["version"] for m in reply["models"] if m["default"]] == [1]
        assert [m.get("rolled_back") for m in reply["models"] if m["version"] == 2] == ["rolled back by hand"]
        assert client.predict("multi-io", {"x": sample["x"], "y": sample["y"]}).summary["version"] == 1
        with pytest.raises(tensorgate.RequestError) as info:
            client.rollback("multi-io")
        assert info.value.code == "conflict"
        client.promote("multi-io", 2)
        assert client.predict("multi-io", {"x": sample["x"], "y": sample["y"]}).summary["version"] == 2

        client.delete("multi-io", 2)
        with pytest.raises(tensorgate.RequestError) as info:
            client.predict("multi-io", {"x": sample["x"], "y": sample["y"]}, version=2)
        assert info.value.code == "unknown_model"
        assert client.reload()["op"] == "reload"
        assert client.predict("multi-io", {"x": sample["x"], "y": sample["y"]}).summary["version"] == 1


def test_admin_token(tmp_path):
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    proc, address, fp, _ = start_host(tmp_path, f'[[token]]\nrole = "admin"\nsha256 = "{digest}"\n')
    try:
        with tensorgate.Client(address, fingerprint=fp) as anonymous:
            with pytest.raises(tensorgate.RequestError) as info:
                anonymous.models()
            assert info.value.code == "forbidden"
            anonymous.set_token(TOKEN)
            assert anonymous.models()[0]["name"] == "multi-io"
        with tensorgate.Client(address, fingerprint=fp, token=TOKEN) as admin:
            assert admin.models()[0]["state"] == "ready"
        cli = subprocess.run([sys.executable, "-m", "tensorgate", "--host", address, "--fingerprint", fp,
                              "--token", TOKEN, "fetch", "multi-io", "-o", str(tmp_path / "f.tar.zst")],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert (tmp_path / "f.tar.zst").stat().st_size > 1000
    finally:
        stop(proc)
