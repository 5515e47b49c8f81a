#!/usr/bin/env python3
"""Groups the host's samples from `perf script -F comm,ip,sym --no-inline`
(recorded with `--call-graph dwarf`) by where on the item path they fall, and
prints one table: share of samples and, given the host's CPU per item, µs per
item. A sample goes to the first group (in this order) with a frame in its
stack; JIT code has no unwind info, so a stack of unknown frames only is the
plugin's guest code, and one that stops in wasmtime is the boundary's host side.
Usage: perf script ... | bench/profile_groups.py [HOST_US_PER_ITEM]
"""
import collections
import sys

GROUPS = [
    ("plugin calls: host side of the component boundary", ["PluginPool::preprocess", "PluginPool::postprocess"]),
    ("hand-off to the executor on the async side", ["ModelExecutor::"]),
    ("executor thread: batching, staging, forward, split", ["run_batch"]),
    ("executor thread: waiting for work", ["tensorgate_host::executor"]),
    ("reply encoding and the request machine", ["FrameWriter::item", "RequestMachine::item_done"]),
    ("frame decoding", ["FrameDecoder", "RequestMachine::on_data"]),
    ("QUIC (drivers, UDP, crypto)", ["ConnectionDriver", "EndpointDriver", "write_all_chunks", "read_chunk", "quinn"]),
    ("the rest of the item path", ["pipeline::run", "LocalRunner"]),
    ("item futures and their bookkeeping (InFlight)", ["inflight"]),
    ("stream pump", ["serve_stream"]),
    ("tokio's scheduler", ["tokio::runtime"]),
]
GUEST = "plugin calls: the guest's own code (JIT)"
BOUNDARY = GROUPS[0][0]
WAITING = GROUPS[3][0]


def samples(lines):
    cur = None
    for line in lines:
        if not line.strip():
            continue
        if not line.startswith("\t"):
            if cur is not None:
                yield cur
            cur = (line.split()[0] if line.split() else "?", [])
        elif cur is not None:
            parts = line.strip().split(None, 1)
            cur[1].append(parts[1] if len(parts) > 1 else "[unknown]")
    if cur is not None:
        yield cur


def group(comm, frames):
    for name, patterns in GROUPS:
        if name == WAITING and not comm.startswith("model-"):
            continue  # executor code on an async worker: a host function a plugin called
        if any(p in f for p in patterns for f in frames):
            return name
    if comm.startswith("model-"):
        return GROUPS[2][0]
    if frames and all(f == "[unknown]" for f in frames):
        return GUEST
    if any("wasmtime" in f or "cranelift" in f or "tensorgate_host::plugin" in f for f in frames):
        return BOUNDARY
    return "other"


def main():
    per_item = float(sys.argv[1]) if len(sys.argv) > 1 else None
    counts = collections.Counter(group(comm, frames) for comm, frames in samples(sys.stdin))
    total = sum(counts.values()) or 1
    print(f"{total} samples")
    print("| where | host samples |" + (" ≈ µs per item |" if per_item else ""))
    print("|---|---|" + ("---|" if per_item else ""))
    for name, n in counts.most_common():
        share = n / total
        print(f"| {name} | {share * 100:.1f} % |" + (f" {share * per_item:.1f} |" if per_item else ""))


if __name__ == "__main__":
    main()
