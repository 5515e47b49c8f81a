"""The container images, built and run: scripts/build-images makes the CPU
host/worker image and the slim gateway image from the release build (a
Debian base from mmdebstrap, no registry), then an engine, a worker and a
gateway run as podman containers on loopback (--network=host) and the CLI,
run from the host image too, answers a submit through the gateway.
Skipped, with the reason, only where there is no container engine."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from engine import NATS_SERVER

ROOT = Path(__file__).resolve().parents[2]
HOST_IMAGE = "localhost/tensorgate:latest"
GATEWAY_IMAGE = "localhost/tensorgate-gateway:latest"
REFERENCE = ROOT / "plugins" / "tabular" / "reference.json"
SAMPLES = ROOT / "plugins" / "tabular" / "samples"
PODMAN = shutil.which("podman")
# These machines: crun refuses hybrid cgroups and the default rlimits are not permitted (TOOLCHAIN.md §6).
RUN = [PODMAN or "podman", *(["--runtime", "runc"] if shutil.which("runc") else []), "run", "--network=host",
       "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
READY_S = 60

pytestmark = pytest.mark.skipif(PODMAN is None, reason="no container engine (podman) on this machine: scripts/setup installs it")


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def images():
    """Builds (or finds up to date) both images; returns their inspect records."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build-images")], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"scripts/build-images failed ({out.returncode}):\n{out.stderr}\n{out.stdout}"
    found = json.loads(podman("image", "inspect", HOST_IMAGE, GATEWAY_IMAGE).stdout)
    return {HOST_IMAGE: found[0], GATEWAY_IMAGE: found[1]}


class Containers:
    """Detached containers of one test, each removed at the end."""

    def __init__(self, work: Path):
        self.work, self.names = work, []

    def start(self, role: str, image: str, args: list[str], mounts: dict[str, str], entrypoint: str | None = None) -> str:
        name = f"tg-test-{os.getpid()}-{role}"
        volumes = [a for host, inside in mounts.items() for a in ("-v", f"{host}:{inside}")]
        command = [*RUN, "-d", "--name", name, *volumes, *(["--entrypoint", entrypoint] if entrypoint else []), image, *args]
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"podman run {role}: {out.stderr}"
        self.names.append(name)
        return name

    def wait_for(self, path: Path, name: str) -> float:
        """Waits for the file a role writes once it serves; returns the seconds waited."""
        start = time.monotonic()
        while not (path.exists() and path.read_text().strip()):
            state = podman("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
            if state != "true" or time.monotonic() - start > READY_S:
                pytest.fail(f"{name} not serving (running: {state}):\n{podman('logs', name).stderr}")
            time.sleep(0.05)
        return time.monotonic() - start

    def stop(self) -> None:
        """Stops them, last started first (the engine last), and removes them."""
        for name in reversed(self.names):
            podman("stop", "-t", "10", name, timeout=30)
            podman("rm", "-f", name, timeout=30)


@contextlib.contextmanager
def containers(work: Path):
    c = Containers(work)
    try:
        yield c
    finally:
        c.stop()


def writable(path: Path) -> Path:
    """A folder the containers' user (65534) can write."""
    path.mkdir()
    path.chmod(0o777)
    return path


def test_images_run_unprivileged_and_the_gateway_carries_no_model_runtime(images):
    host, gateway = images[HOST_IMAGE], images[GATEWAY_IMAGE]
    assert host["Config"]["User"] == gateway["Config"]["User"] == "65534"
    assert host["Config"]["Entrypoint"] == ["/usr/local/bin/tensorgate-host"]
    assert gateway["Config"]["Entrypoint"] == ["/usr/local/bin/tensorgate-gateway"]
    assert gateway["Size"] * 2 < host["Size"], "the slim gateway is far smaller than the host image"
    listing = subprocess.run([*RUN, "--rm", "--entrypoint", "/bin/sh", GATEWAY_IMAGE, "-c", "ls /opt /usr/local/bin"],
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == ["/opt:", "/usr/local/bin:", "tensorgate-gateway"]
    # The host image's binary finds libtorch and ONNX Runtime, and knows its roles.
    roles = subprocess.run([*RUN, "--rm", HOST_IMAGE, "--help"], capture_output=True, text=True, timeout=60)
    assert roles.returncode == 0, roles.stderr
    for role in ("serve", "worker", "gateway", "check"):
        assert role in roles.stdout


def test_engine_worker_and_gateway_from_the_images_answer_a_submit(images, tmp_path):
    if not NATS_SERVER.exists():
        pytest.fail(f"{NATS_SERVER} is missing: run scripts/setup")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"nats://127.0.0.1:{port}"
    engine, worker, gateway = (writable(tmp_path / d) for d in ("engine", "worker", "gateway"))
    reference = json.loads(REFERENCE.read_text())
    with containers(tmp_path) as c:
        # The engine: the official nats-server binary in the slim image's base.
        c.start("engine", GATEWAY_IMAGE, ["-a", "127.0.0.1", "-p", str(port), "-js", "-sd", "/engine"],
                {str(NATS_SERVER): "/usr/local/bin/nats-server:ro", str(engine): "/engine"}, entrypoint="/usr/local/bin/nats-server")
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"engine did not start:\n{podman('logs', c.names[-1]).stderr}"
                time.sleep(0.05)
        name = c.start("worker", HOST_IMAGE, ["worker", "--nats", url, "--repository", "/opt/tensorgate/examples",
                                              "--state-dir", "/state", "--threads", "1", "--heartbeat-ms", "200"],
                       {str(worker): "/state"})
        worker_s = c.wait_for(worker / "worker", name)
        name = c.start("gateway", GATEWAY_IMAGE, ["--nats", url, "--listen", "127.0.0.1:0", "--state-dir", "/state", "--heartbeat-ms", "200"],
                       {str(gateway): "/state"})
        gateway_s = c.wait_for(gateway / "fingerprint", name)
        address = (gateway / "listening").read_text().strip()
        fingerprint = (gateway / "fingerprint").read_text().strip()
        print(f"podman run to serving: worker {worker_s:.2f} s, gateway {gateway_s:.2f} s")
        # The CLI from the host image, through the gateway to the worker.
        cli = [*RUN, "--rm", "-v", f"{SAMPLES}:/samples:ro", "--entrypoint", "tensorgate", HOST_IMAGE,
               "--host", address, "--fingerprint", fingerprint]
        deadline = time.monotonic() + READY_S
        while True:  # the gateway learns of the worker from its advert
            out = subprocess.run([*cli, "submit", "--model", "tabular", "/samples/jet-0.json"], capture_output=True, text=True, timeout=60)
            if out.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert out.returncode == 0, f"submit failed ({out.returncode}):\n{out.stderr}\n{out.stdout}"
        line = json.loads(out.stdout.splitlines()[0])
        assert line["ok"] is True and line["file"] == "/samples/jet-0.json"
        for label in reference["labels"]:
            assert abs(line["result"][label] - reference["cases"][0]["scores"][label]) <= 1e-5
        status = subprocess.run([*cli, "status"], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        fleet = json.loads(status.stdout)
        assert fleet["role"] == "gateway"
        assert [w["device"] for w in fleet["workers"]] == ["cpu"]
        assert "tabular/1" in fleet["workers"][0]["models"]
