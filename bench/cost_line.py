"""One line for one `tensorgate bench --json` result read from stdin: the
rate (req/s, or items/s for many-item requests), p50, and the host's and the
client's CPU per request or item (the host's from `bench/torchserve/cell.py`).
Usage: ... | python3 bench/cost_line.py LABEL   (used by cost.sh and many-items.sh)"""
import json
import sys

d = json.loads(sys.stdin.read())
n = d["requests"] * d["items_per_request"]
many = d["items_per_request"] > 1
rate, unit, per = (d["items_per_s"], "items/s", "item") if many else (d["requests_per_s"], "req/s", "request")
host, client = d["server_cpu_s"] / n * 1e6, d["client_cpu_s"] / n * 1e6
s = d["server_us_per_item"]
print(f"{sys.argv[1]}: {rate:,.0f} {unit}, p50 {d['latency_us']['p50']:.0f} µs, CPU per {per}: host {host:.1f} µs + client {client:.1f} µs; "
      f"preprocess {s['preprocess']:.1f} µs, postprocess {s['postprocess']:.1f} µs")
