"""The independent Python client (minimal_client.py) against a real host.

Starts target/release/tensorgate-host on 127.0.0.1 with the model repository
built by scripts/setup, and runs the client as a subprocess, as a user would.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import minimal_client
from engine import stop

ROOT = Path(__file__).resolve().parents[2]
HOST_BIN = ROOT / "target" / "release" / "tensorgate-host"
REPOSITORY = ROOT / "target" / "repository"
CLIENT = Path(__file__).resolve().parent / "minimal_client.py"
SAMPLE = ROOT / "plugins" / "tabular" / "samples" / "jet-0.json"
REFERENCE = ROOT / "plugins" / "tabular" / "reference.json"
DOC = ROOT / "docs" / "protocol.md"

STARTUP_TIMEOUT_S = 60
CLIENT_TIMEOUT_S = 60


class Host:
    def __init__(self, proc: subprocess.Popen, address: str, fingerprint: str, log: Path):
        self.proc, self.address, self.fingerprint, self.log = proc, address, fingerprint, log


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    for path in (HOST_BIN, REPOSITORY):
        if not path.exists():
            pytest.fail(f"{path} is missing: build it with scripts/setup")
    state = tmp_path_factory.mktemp("host-state")
    log = state / "host.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [str(HOST_BIN), "serve", "--repository", str(REPOSITORY), "--listen", "127.0.0.1:0", "--state-dir", str(state)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        # The host writes STATE/listening, then STATE/fingerprint: wait for both.
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        listening, fingerprint = state / "listening", state / "fingerprint"
        while not (listening.exists() and fingerprint.exists()):
            if proc.poll() is not None:
                pytest.fail(f"tensorgate-host exited with {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"tensorgate-host not ready after {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")
            time.sleep(0.05)
        fp = ""
        while len(fp) != 64 and time.monotonic() < deadline:  # written whole, but be safe
            fp = fingerprint.read_text().strip()
            time.sleep(0.01)
        address = listening.read_text().strip()
        assert address.startswith("127.0.0.1:"), address
        yield Host(proc, address, fp, log)
    finally:
        stop([proc])


def run_client(host: Host, *, model: str = "tabular", fingerprint: str | None = None, file: Path = SAMPLE):
    return subprocess.run(
        [
            sys.executable, str(CLIENT),
            "--host", host.address,
            "--fingerprint", fingerprint if fingerprint is not None else host.fingerprint,
            "--model", model,
            "--timeout", "30",
            str(file),
        ],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        cwd=ROOT,
    )


def test_predict_matches_reference(host):
    reference = json.loads(REFERENCE.read_text())
    case = reference["cases"][0]
    # The sample file is reference case 0's request.
    assert json.loads(SAMPLE.read_text()) == case["request"]

    out = run_client(host)
    assert out.returncode == 0, f"client failed ({out.returncode}):\n{out.stderr}\n{out.stdout}"
    reply = json.loads(out.stdout)
    assert reply["errors"] == []
    assert len(reply["results"]) == 1
    result = reply["results"][0]
    assert result["index"] == 0
    assert result["content_type"] == "application/json"
    scores = result["value"]
    assert sorted(scores) == sorted(reference["labels"])
    for label in reference["labels"]:
        assert abs(scores[label] - case["scores"][label]) <= 1e-5, (label, scores[label], case["scores"][label])
    summary = reply["summary"]
    assert (summary["model"], summary["version"], summary["ok"], summary["failed"]) == ("tabular", 1, 1, 0)


def test_wrong_fingerprint_is_rejected(host):
    # Same length, every hex digit changed.
    wrong = "".join("0123456789abcdef"[(int(c, 16) + 1) % 16] for c in host.fingerprint)
    out = run_client(host, fingerprint=wrong)
    assert out.returncode == 3, f"expected a pin mismatch (3), got {out.returncode}:\n{out.stderr}\n{out.stdout}"
    assert "fingerprint mismatch" in out.stderr
    assert out.stdout == ""
    # The host keeps serving after a client hung up on it: the right pin still works.
    assert run_client(host).returncode == 0


def test_unknown_model_is_a_request_error(host):
    out = run_client(host, model="no-such-model")
    assert out.returncode == 2, f"expected a RequestError (2), got {out.returncode}:\n{out.stderr}\n{out.stdout}"
    error = json.loads(out.stdout)["request_error"]
    assert error["code"] == "unknown_model"
    assert "no-such-model" in error["message"]


# --- against the document, no host needed ----------------------------------------


def doc_hex(label: str) -> bytes:
    """The bytes of the ```hex LABEL block of docs/protocol.md (comments dropped)."""
    text = DOC.read_text()
    m = re.search(r"^```hex " + re.escape(label) + r"\n(.*?)^```", text, re.S | re.M)
    assert m, f"no ```hex {label} block in {DOC}"
    digits = "".join(line.split("#", 1)[0] for line in m.group(1).splitlines())
    return bytes.fromhex("".join(digits.split()))


def test_request_bytes_match_the_documented_example():
    ours = minimal_client.predict_request("tabular", SAMPLE.read_bytes(), request_id="req-1")
    assert ours == doc_hex("request")


def test_documented_reply_decodes():
    reader = minimal_client.FrameReader()
    reader.feed(doc_hex("reply"))
    frames = []
    while (f := reader.next()) is not None:
        frames.append(f)
    assert reader.at_boundary()
    reply = minimal_client.collect_reply(frames)
    assert reply.summary["ok"] == 1 and reply.summary["request_id"] == "req-1"
    assert set(json.loads(reply.results[0]["payload"])) == {"qcd", "top", "w", "z"}

    reader = minimal_client.FrameReader()
    reader.feed(doc_hex("request-error"))
    with pytest.raises(minimal_client.RequestFailed) as failed:
        minimal_client.collect_reply([reader.next()])
    assert failed.value.code == "unknown_model"


def test_stream_credit_covers_the_limit_plus_sixteen(host):
    """§1: on a fresh connection the host grants credit for 256 + 16 streams
    at once; with 256 requests held open, each of the next 16 streams is
    answered at once with limit_exceeded (no wait for credit)."""
    import asyncio

    async def probe():
        address, port = minimal_client.parse_host(host.address)
        pin = minimal_client.parse_fingerprint(host.fingerprint)
        protocol, transport = await minimal_client._open(address, port, pin, 10.0)
        try:
            quic = protocol._quic  # noqa: SLF001
            assert quic._remote_max_streams_bidi == 256 + 16  # noqa: SLF001
            ids = []
            for _ in range(256 + 16):
                sid = quic.get_next_available_stream_id(is_unidirectional=False)
                quic.send_stream_data(sid, minimal_client.header_frame("tabular"), end_stream=False)
                ids.append(sid)
            protocol.transmit()
            extra = ids[256:]
            deadline = time.monotonic() + 10
            while not all(sid in protocol.finished for sid in extra):
                assert time.monotonic() < deadline, "the 16 streams past the limit were not answered in time"
                protocol.changed.clear()
                try:
                    await asyncio.wait_for(protocol.changed.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
            for sid in extra:
                reader = minimal_client.FrameReader()
                reader.feed(bytes(protocol.streams[sid]))
                kind, body = reader.next()
                assert kind == minimal_client.REQUEST_ERROR, kind
                assert body["code"] == "limit_exceeded", body
                assert "max_streams_per_connection = 256" in body["message"], body
            assert not any(sid in protocol.streams for sid in ids[:256]), "held requests stay open"
        finally:
            protocol.close()
            transport.close()

    asyncio.run(probe())
