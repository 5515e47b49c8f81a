"""tensorgate.data over root://: a real XRootD server (Debian's
xrootd-server, installed by scripts/setup-python) on 127.0.0.1 serving
copies of the NanoAOD samples; the same files read locally and remotely
give identical batches, and predict reads root:// too."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tensorgate.data import Source, batches, fit
from tensorgate.spec import Spec
from engine import free_port, stop

XROOTD = shutil.which("xrootd")
STARTUP_TIMEOUT_S = 30

SPEC = """tree = "Events"
selection = "nJet >= 1"
observers = ["event"]

[[inputs]]
name = "jets"
pad = 5
sort = "Jet_pt"
features = ["logpt = log(Jet_pt)", "Jet_eta", "dr = delta_r(Jet_eta, Jet_phi, 0, MET_phi)"]

[[inputs]]
name = "event"
features = ["MET_pt", "nJet"]

[labels]
classes = ["no muon", "muons"]
expression = "nMuon >= 1"
"""


@pytest.fixture()
def xrootd_server(nanoaod):
    """An xrootd process on 127.0.0.1 exporting a folder with the samples; yields root://127.0.0.1:PORT/."""
    if XROOTD is None:
        pytest.skip("no xrootd binary (scripts/setup-python installs Debian's xrootd-server; it could not here)")
    pytest.importorskip("fsspec_xrootd", reason="fsspec-xrootd comes with scripts/setup-python")
    # xrootd will not run as root: it drops to `nobody`, who must read the folder.
    base = Path(tempfile.mkdtemp(prefix="tg-xrootd-"))
    proc = None
    try:
        data, admin = base / "data", base / "admin"
        data.mkdir()
        admin.mkdir()
        for f in ("nano_dy.root", "nano_tt_v12.root", "nano_dimuon.root"):
            shutil.copyfile(nanoaod / f, data / f)
        for p in (base, data, admin, *data.iterdir()):
            p.chmod(0o777 if p.is_dir() else 0o644)
        for attempt in range(3):
            port = free_port()
            (base / "xrd.cfg").write_text(f"all.export /\noss.localroot {data}\nall.adminpath {admin}\n"
                                          f"all.pidpath {admin}\nxrd.port {port}\n")
            cmd = [XROOTD, "-c", str(base / "xrd.cfg"), "-l", str(base / "xrootd.log"), "-n", "tgtest"]
            if os.geteuid() == 0:
                cmd += ["-R", "nobody"]
            log = open(base / "out.log", "wb")
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            up = False
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    up = True
                    break
                except OSError:
                    time.sleep(0.1)
            if up:
                break
            proc.kill()
            proc.wait(timeout=10)
            proc = None
        if proc is None:
            pytest.fail(f"xrootd did not start:\n{(base / 'out.log').read_text()}")
        yield f"root://127.0.0.1:{port}/", data
    finally:
        if proc is not None:
            stop([proc])
        shutil.rmtree(base, ignore_errors=True)


def test_local_and_root_files_give_identical_batches(xrootd_server, nanoaod):
    url, data = xrootd_server
    names = ["nano_dy.root", "nano_tt_v12.root"]
    local_spec, remote_spec = Spec.from_toml(SPEC, "x.toml"), Spec.from_toml(SPEC, "x.toml")
    local = Source(local_spec, [str(data / n) for n in names], validation=0.2, step_size=50)
    remote = Source(remote_spec, [f"{url}/{n}" for n in names], validation=0.2, step_size=50)
    assert remote.files[0].startswith("root://127.0.0.1:")
    assert fit(local_spec, local) == fit(remote_spec, remote) > 100
    assert local_spec.to_json() == remote_spec.to_json()  # the same fitted standardisation, to the bit
    for part in ("train", "validation"):
        a = list(batches(local_spec, local, 64, part, shuffle_buffer=128, seed=4))
        b = list(batches(remote_spec, remote, 64, part, shuffle_buffer=128, seed=4))
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            assert x.inputs.keys() == y.inputs.keys()
            for k in x.inputs:
                np.testing.assert_array_equal(x.inputs[k], y.inputs[k])
            np.testing.assert_array_equal(x.label, y.label)
    assert {int(v) for x in a for v in x.label} <= {0, 1}


def test_missing_remote_branch_names_the_url_and_the_line(xrootd_server):
    url, _ = xrootd_server
    spec = Spec.from_toml(SPEC.replace('"Jet_eta",', '"Jet_etta",'), "x.toml")
    from tensorgate.spec import SpecError

    with pytest.raises(SpecError, match=r"x.toml line 9: branch `Jet_etta` is not in root://127.0.0.1:\d+//nano_dy.root:Events"):
        fit(spec, Source(spec, [f"{url}/nano_dy.root"]))
