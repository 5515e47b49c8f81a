"""Runs one load-generator command and prints its JSON result with CPU time added.

Usage: cell.py (--session SID | --pid PID) -- COMMAND...
The command prints one JSON object, alone on a line or after `RESULT `.
Added fields: server_cpu_s (user+system CPU of the server's processes during
the command: every process of session SID, or process PID with its threads),
client_cpu_s (user+system CPU of the command itself), and the same per request
in microseconds (server_cpu_us_per_req, client_cpu_us_per_req).
"""
import json
import os
import resource
import subprocess
import sys

TICK = os.sysconf("SC_CLK_TCK")


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def server_cpu(kind, ident):
    pids = [ident] if kind == "--pid" else [int(p) for p in os.listdir("/proc") if p.isdigit()]
    total = 0
    for pid in pids:
        s = stat(pid)
        if s is None or (kind == "--session" and int(s[3]) != ident):
            continue
        total += int(s[11]) + int(s[12])  # utime, stime
    return total / TICK


def main():
    kind, ident, sep, *cmd = sys.argv[1:]
    assert kind in ("--session", "--pid") and sep == "--" and cmd, __doc__
    ident = int(ident)
    before = server_cpu(kind, ident)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = server_cpu(kind, ident)
    line = next(l for l in out.splitlines() if l.startswith(("RESULT {", "{")))
    result = json.loads(line.removeprefix("RESULT "))
    n = max(result["requests"], 1)
    result["server_cpu_s"] = after - before
    result["client_cpu_s"] = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    result["server_cpu_us_per_req"] = result["server_cpu_s"] / n * 1e6
    result["client_cpu_us_per_req"] = result["client_cpu_s"] / n * 1e6
    print(json.dumps(result))


main()
