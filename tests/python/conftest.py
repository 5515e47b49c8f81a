"""Shared fixtures for the tensorgate Python package tests: a real
tensorgate-host on 127.0.0.1 (port 0) serving target/repository, and the
cached NanoAOD samples (both made by scripts/setup)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from engine import stop

ROOT = Path(__file__).resolve().parents[2]
HOST_BIN = ROOT / "target" / "release" / "tensorgate-host"
REPOSITORY = ROOT / "target" / "repository"
NANOAOD = Path(os.environ.get("TENSORGATE_CACHE", Path.home() / ".cache" / "tensorgate")) / "nanoaod"
STARTUP_TIMEOUT_S = 60


class RunningHost:
    def __init__(self, proc, address: str, fingerprint: str, state: Path):
        self.proc, self.address, self.fingerprint, self.state = proc, address, fingerprint, state


@pytest.fixture(scope="session")
def tg_host(tmp_path_factory):
    """A tensorgate-host process for the whole session."""
    for path in (HOST_BIN, REPOSITORY):
        if not path.exists():
            pytest.fail(f"{path} is missing: build it with scripts/setup")
    state = tmp_path_factory.mktemp("tg-host-state")
    log = state / "host.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [str(HOST_BIN), "serve", "--repository", str(REPOSITORY), "--listen", "127.0.0.1:0", "--state-dir", str(state)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        listening, fingerprint = state / "listening", state / "fingerprint"
        while not (listening.exists() and fingerprint.exists()):
            if proc.poll() is not None:
                pytest.fail(f"tensorgate-host exited with {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"tensorgate-host not ready after {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")
            time.sleep(0.05)
        fp = ""
        while len(fp) != 64 and time.monotonic() < deadline:
            fp = fingerprint.read_text().strip()
            time.sleep(0.01)
        yield RunningHost(proc, listening.read_text().strip(), fp, state)
    finally:
        stop([proc])


@pytest.fixture(scope="session")
def client(tg_host):
    """A tensorgate.Client connected to the session's host."""
    import tensorgate

    with tensorgate.Client(tg_host.address, fingerprint=tg_host.fingerprint) as c:
        yield c


@pytest.fixture(scope="session")
def nanoaod():
    """The folder of cached NanoAOD samples."""
    for f in ("nano_dy.root", "nano_tt_v12.root", "nano_dimuon.root", "nano_dy_empty.root"):
        if not (NANOAOD / f).exists():
            pytest.fail(f"{NANOAOD / f} is missing: run scripts/setup-python")
    return NANOAOD
