"""Processes of the Python tests: a real nats-server with JetStream on a
free loopback port (the engine), waiting for a host, worker or gateway to
announce itself, and stopping them all."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("TENSORGATE_CACHE", Path.home() / ".cache" / "tensorgate"))
NATS_SERVER = Path(os.environ.get("NATS_SERVER", CACHE / "bin" / "nats-server-2.15.1"))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_engine(work: Path, procs: list, monitor_port: int | None = None) -> str:
    """Starts the engine (its store in WORK/engine; its monitoring endpoint,
    /jsz and /varz, on `monitor_port` when given), appends its process to
    `procs` (the caller stops them) and returns its URL once it accepts."""
    port = free_port()
    monitor = ["-m", str(monitor_port)] if monitor_port else []
    procs.append(subprocess.Popen([str(NATS_SERVER), "-a", "127.0.0.1", "-p", str(port), *monitor, "-js", "-sd", str(work / "engine")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"nats://127.0.0.1:{port}"
        except OSError:
            assert time.monotonic() < deadline, "engine did not start"
            time.sleep(0.05)


def wait_for(path: Path, proc: subprocess.Popen, what: str, log: Path, timeout_s: float = 60) -> str:
    """Waits until PATH holds text (a process's announcement) and returns it;
    fails with the process's log if it exits or takes longer than `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text().strip()):
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not ready after {timeout_s} s:\n{log.read_text()}")
        time.sleep(0.05)
    return path.read_text().strip()


def stop(procs: list) -> None:
    """Terminates the processes, last started first; kills those that linger."""
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
