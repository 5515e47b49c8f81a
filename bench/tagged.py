"""Reads the bench scripts' result files: one `TAG {json}` line per measurement."""
import json
import statistics

med = statistics.median


def load(path):
    """Returns {tag: [parsed json, ...]} in file order."""
    rows = {}
    with open(path) as f:
        for line in f:
            tag, js = line.split(" ", 1)
            rows.setdefault(tag, []).append(json.loads(js))
    return rows
