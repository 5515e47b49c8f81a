#!/usr/bin/env python3
"""A minimal, independent tensorgate client, written from docs/protocol.md alone.

It shares no code with the Rust implementation: QUIC and TLS 1.3 come from
aioquic, the frame headers are MessagePack maps encoded with msgpack.

    python minimal_client.py --host 127.0.0.1:PORT --fingerprint HEX --model tabular FILE

It connects with ALPN ``tensorgate/1``, pins the host's self-signed
certificate by the SHA-256 of its DER encoding, opens one bidirectional
stream, sends ``Header(predict) + Item + End``, reads frames until the
``Summary`` (or a ``RequestError``) and prints the decoded reply as JSON.

Exit status: 0 when the request was answered (even if the item failed),
2 when the host answered with a RequestError, 3 when the certificate pin did
not match, 1 for any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import json
import socket
import ssl
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

import msgpack
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

ALPN = "tensorgate/1"

# Frame kinds (docs/protocol.md, "Frame kinds").
HEADER, ITEM, END = 0x01, 0x02, 0x03
RESULT, ITEM_ERROR, SUMMARY, REQUEST_ERROR, STATUS = 0x81, 0x82, 0x83, 0x84, 0x85
KIND_NAMES = {
    HEADER: "Header", ITEM: "Item", END: "End", RESULT: "Result", ITEM_ERROR: "ItemError",
    SUMMARY: "Summary", REQUEST_ERROR: "RequestError", STATUS: "Status",
}
FRAME_HEAD = struct.Struct("<BI")  # kind: u8, body_len: u32 little-endian
HEAD_LEN = struct.Struct("<I")  # head_len of Item/Result bodies
# Default limits (docs/protocol.md, "Limits"): map bodies and item bodies.
MAX_HEADER_BYTES = 64 * 1024
MAX_FRAME_BYTES = 256 * 1024 * 1024


class ProtocolViolation(Exception):
    """The host's bytes broke the protocol."""


class PinMismatch(Exception):
    """The host presented a certificate whose SHA-256 is not the pinned one."""


class RequestFailed(Exception):
    """The host rejected the whole request with a RequestError frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"request failed [{self.code}]: {self.message}"


# --- encoding -----------------------------------------------------------------


def frame(kind: int, body: bytes = b"") -> bytes:
    """``kind: u8 | body_len: u32 LE | body``."""
    return FRAME_HEAD.pack(kind, len(body)) + body


def packb(value: Any) -> bytes:
    # Maps with string keys, strings as MessagePack str, byte strings as bin.
    return msgpack.packb(value, use_bin_type=True)


def header_frame(model: str, request_id: str = "", accept: list[str] | None = None,
                 version: int | None = None, deadline_ms: int | None = None) -> bytes:
    head: dict[str, Any] = {"op": "predict", "model": model}
    if version is not None:
        head["version"] = version
    head["request_id"] = request_id
    head["accept"] = list(accept or [])
    if deadline_ms is not None:
        head["deadline_ms"] = deadline_ms
    return frame(HEADER, packb(head))


def item_frame(index: int, payload: bytes, content_type: str = "application/json",
               metadata: dict[str, str] | None = None) -> bytes:
    """An Item frame: body = ``head_len: u32 LE | msgpack ItemHead | payload``."""
    head = packb({
        "index": index,
        "content_type": content_type,
        "metadata": dict(metadata or {}),
        "compression": "none",
    })
    return frame(ITEM, HEAD_LEN.pack(len(head)) + head + payload)


def end_frame() -> bytes:
    return frame(END)


def predict_request(model: str, payload: bytes, content_type: str = "application/json",
                    request_id: str = "") -> bytes:
    """The whole client side of a one-item predict request."""
    return header_frame(model, request_id=request_id) + item_frame(0, payload, content_type) + end_frame()


# --- decoding -----------------------------------------------------------------


def unpackb(kind: int, data: bytes) -> dict:
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several exception types
        raise ProtocolViolation(f"malformed {KIND_NAMES[kind]} frame: {e}") from e
    if not isinstance(value, dict):
        raise ProtocolViolation(f"malformed {KIND_NAMES[kind]} frame: not a map")
    return value


class FrameReader:
    """Incremental decoder: feed bytes, take ``(kind, value)`` pairs out."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next(self) -> tuple[int, Any] | None:
        if len(self.buf) < FRAME_HEAD.size:
            return None
        kind, body_len = FRAME_HEAD.unpack_from(self.buf)
        if kind not in KIND_NAMES:
            raise ProtocolViolation(f"unknown frame kind 0x{kind:02x}")
        limit = MAX_FRAME_BYTES if kind in (ITEM, RESULT) else MAX_HEADER_BYTES
        if body_len > limit:
            raise ProtocolViolation(f"{KIND_NAMES[kind]} frame of {body_len} bytes exceeds {limit}")
        if len(self.buf) < FRAME_HEAD.size + body_len:
            return None
        body = bytes(self.buf[FRAME_HEAD.size:FRAME_HEAD.size + body_len])
        del self.buf[:FRAME_HEAD.size + body_len]
        if kind in (ITEM, RESULT):
            if len(body) < HEAD_LEN.size:
                raise ProtocolViolation("item body shorter than its 4-byte head length")
            (head_len,) = HEAD_LEN.unpack_from(body)
            if HEAD_LEN.size + head_len > len(body):
                raise ProtocolViolation("item head length runs past the frame body")
            head = unpackb(kind, body[HEAD_LEN.size:HEAD_LEN.size + head_len])
            return kind, (head, body[HEAD_LEN.size + head_len:])
        if kind == END:
            if body:
                raise ProtocolViolation("End frame with a body")
            return kind, None
        return kind, unpackb(kind, body)

    def at_boundary(self) -> bool:
        return not self.buf


@dataclass
class Reply:
    """A predict reply: results and item errors by index, and the summary."""

    results: dict[int, dict] = field(default_factory=dict)
    errors: dict[int, dict] = field(default_factory=dict)
    summary: dict | None = None

    def to_json(self) -> dict:
        out = {"results": [], "errors": [], "summary": self.summary}
        for index in sorted(self.results):
            r = self.results[index]
            entry = {"index": index, "content_type": r["content_type"], "metadata": r["metadata"]}
            if r["content_type"] == "application/json":
                entry["value"] = json.loads(r["payload"])
            else:
                entry["payload_hex"] = r["payload"].hex()
            out["results"].append(entry)
        for index in sorted(self.errors):
            out["errors"].append(self.errors[index])
        return out


def collect_reply(frames: list[tuple[int, Any]]) -> Reply:
    """Applies the host-side sequencing rules to decoded frames."""
    reply = Reply()
    for kind, value in frames:
        if reply.summary is not None:
            raise ProtocolViolation(f"{KIND_NAMES[kind]} frame after the Summary")
        if kind == RESULT:
            head, payload = value
            index = head["index"]
            if index in reply.results or index in reply.errors:
                raise ProtocolViolation(f"duplicate reply for item {index}")
            compression = head.get("compression", "none")
            if compression != "none":
                # We sent an empty `accept`, so the host must not compress.
                raise ProtocolViolation(f"result {index} compressed with {compression!r}, which was not accepted")
            reply.results[index] = {
                "content_type": head.get("content_type", ""),
                "metadata": head.get("metadata", {}),
                "payload": payload,
            }
        elif kind == ITEM_ERROR:
            index = value["index"]
            if index in reply.results or index in reply.errors:
                raise ProtocolViolation(f"duplicate reply for item {index}")
            reply.errors[index] = {"index": index, "code": value["code"], "message": value["message"]}
        elif kind == SUMMARY:
            reply.summary = value
        elif kind == REQUEST_ERROR:
            raise RequestFailed(value.get("code", "unknown"), value.get("message", ""))
        else:
            raise ProtocolViolation(f"unexpected {KIND_NAMES[kind]} frame in a predict reply")
    return reply


# --- QUIC ---------------------------------------------------------------------


class ClientProtocol(QuicConnectionProtocol):
    """Collects the bytes of each stream and wakes waiters on every change."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streams: dict[int, bytearray] = {}
        self.finished: set[int] = set()
        self.reset: dict[int, int] = {}
        self.terminated: events.ConnectionTerminated | None = None
        self.changed = asyncio.Event()

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            self.streams.setdefault(event.stream_id, bytearray()).extend(event.data)
            if event.end_stream:
                self.finished.add(event.stream_id)
        elif isinstance(event, events.StreamReset):
            self.reset[event.stream_id] = event.error_code
        elif isinstance(event, events.ConnectionTerminated):
            self.terminated = event
        else:
            return
        self.changed.set()

    def peer_certificate_der(self) -> bytes:
        # aioquic keeps the parsed leaf certificate of the TLS handshake; its
        # DER encoding is the exact bytes the host sent.
        from cryptography.hazmat.primitives.serialization import Encoding

        cert = self._quic.tls._peer_certificate  # noqa: SLF001 (no public accessor)
        if cert is None:
            raise PinMismatch("the host presented no certificate")
        return cert.public_bytes(Encoding.DER)


def parse_fingerprint(text: str) -> bytes:
    cleaned = text.strip().replace(":", "").lower()
    try:
        raw = bytes.fromhex(cleaned)
    except ValueError as e:
        raise ValueError(f"fingerprint {text!r} is not hex") from e
    if len(raw) != 32:
        raise ValueError(f"fingerprint {text!r} is not 32 bytes (SHA-256)")
    return raw


def parse_host(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [v6]:port
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    if not host or not port:
        raise ValueError(f"--host {text!r} is not HOST:PORT")
    return host, int(port)


async def _open(host: str, port: int, fingerprint: bytes, timeout: float) -> tuple[ClientProtocol, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    family, _, _, _, addr = (await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[0]
    ip = ipaddress.ip_address(addr[0])
    # Bind the loopback interface when talking to a loopback host, else any.
    if family == socket.AF_INET6:
        local = ("::1" if ip.is_loopback else "::", 0)
    else:
        local = ("127.0.0.1" if ip.is_loopback else "0.0.0.0", 0)
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        # The host's certificate is self-signed: skip CA verification here and
        # pin its SHA-256 below. aioquic still checks the handshake signature
        # against the presented certificate's key, so pinning it is sound.
        verify_mode=ssl.CERT_NONE,
        server_name="localhost",
        idle_timeout=timeout,
    )
    from aioquic.quic.connection import QuicConnection

    transport, protocol = await loop.create_datagram_endpoint(
        lambda: ClientProtocol(QuicConnection(configuration=config)), local_addr=local, family=family
    )
    protocol.connect(addr[:2] if family == socket.AF_INET else addr)
    try:
        await asyncio.wait_for(protocol.wait_connected(), timeout)
    except (ConnectionError, asyncio.TimeoutError) as e:
        transport.close()
        raise ConnectionError(f"QUIC handshake with {host}:{port} failed: {e!r}") from e
    got = hashlib.sha256(protocol.peer_certificate_der()).digest()
    if got != fingerprint:
        protocol.close(reason_phrase="certificate fingerprint mismatch")
        await asyncio.sleep(0)  # let the CONNECTION_CLOSE go out
        transport.close()
        raise PinMismatch(f"certificate fingerprint mismatch: pinned {fingerprint.hex()}, host presented {got.hex()}")
    negotiated = protocol._quic.tls.alpn_negotiated  # noqa: SLF001
    if negotiated != ALPN:
        protocol.close()
        transport.close()
        raise ConnectionError(f"host negotiated ALPN {negotiated!r}, not {ALPN!r}")
    return protocol, transport


async def exchange(protocol: ClientProtocol, request: bytes, final_kinds: set[int], timeout: float) -> list:
    """Sends ``request`` on a new bidirectional stream, finishes it, and reads
    frames until one of ``final_kinds`` arrives."""
    quic = protocol._quic  # noqa: SLF001
    stream_id = quic.get_next_available_stream_id(is_unidirectional=False)
    quic.send_stream_data(stream_id, request, end_stream=True)
    protocol.transmit()
    reader = FrameReader()
    frames: list = []
    consumed = 0

    async def read_all() -> list:
        nonlocal consumed
        while True:
            data = protocol.streams.get(stream_id, b"")
            if len(data) > consumed:
                reader.feed(bytes(data[consumed:]))
                consumed = len(data)
                while (f := reader.next()) is not None:
                    frames.append(f)
                    if f[0] in final_kinds:
                        return frames
            if stream_id in protocol.finished:
                raise ProtocolViolation("host finished the stream before the final frame")
            if stream_id in protocol.reset:
                raise ConnectionError(f"host reset the stream (code {protocol.reset[stream_id]})")
            if protocol.terminated is not None:
                t = protocol.terminated
                raise ConnectionError(f"connection closed: code {t.error_code}, {t.reason_phrase!r}")
            protocol.changed.clear()
            await protocol.changed.wait()

    return await asyncio.wait_for(read_all(), timeout)


async def predict(host: str, port: int, fingerprint: str, model: str, payload: bytes,
                  content_type: str = "application/json", request_id: str = "", timeout: float = 30.0) -> Reply:
    """Runs a one-item predict request; raises RequestFailed on a RequestError."""
    pin = parse_fingerprint(fingerprint)
    protocol, transport = await _open(host, port, pin, timeout)
    try:
        frames = await exchange(
            protocol, predict_request(model, payload, content_type, request_id), {SUMMARY, REQUEST_ERROR}, timeout
        )
        return collect_reply(frames)
    finally:
        protocol.close()
        try:
            await asyncio.wait_for(protocol.wait_closed(), 1.0)
        except asyncio.TimeoutError:
            pass
        transport.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", required=True, help="HOST:PORT of the tensorgate host")
    ap.add_argument("--fingerprint", required=True, help="SHA-256 of the host certificate (hex)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--content-type", default="application/json")
    ap.add_argument("--request-id", default="")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole exchange")
    ap.add_argument("file", help="the item's payload")
    args = ap.parse_args(argv)
    host, port = parse_host(args.host)
    with open(args.file, "rb") as f:
        payload = f.read()
    try:
        reply = asyncio.run(
            predict(host, port, args.fingerprint, args.model, payload, args.content_type, args.request_id, args.timeout)
        )
    except RequestFailed as e:
        print(json.dumps({"request_error": {"code": e.code, "message": e.message}}))
        print(e, file=sys.stderr)
        return 2
    except PinMismatch as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (ConnectionError, ProtocolViolation, asyncio.TimeoutError, ValueError, OSError) as e:
        print(f"error: {e!r}", file=sys.stderr)
        return 1
    print(json.dumps(reply.to_json(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
