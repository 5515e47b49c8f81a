"""A real nats-server with JetStream on a free loopback port: the engine of
the cluster tests (test_cluster.py, test_oip.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

CACHE = Path(os.environ.get("TENSORGATE_CACHE", Path.home() / ".cache" / "tensorgate"))
NATS_SERVER = Path(os.environ.get("NATS_SERVER", CACHE / "bin" / "nats-server-2.15.1"))


def start_engine(work: Path, procs: list) -> str:
    """Starts the engine (its store in WORK/engine), appends its process to
    `procs` (the caller stops them) and returns its URL once it accepts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs.append(subprocess.Popen([str(NATS_SERVER), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(work / "engine")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"nats://127.0.0.1:{port}"
        except OSError:
            assert time.monotonic() < deadline, "engine did not start"
            time.sleep(0.05)
