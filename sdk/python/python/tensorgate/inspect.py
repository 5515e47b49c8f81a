"""`python -m tensorgate inspect FILE... --tree T`: what a physicist looks at
before writing a feature spec (the original reader's `--info`).

Per file: entries, flat and jagged branch counts, and per branch its type,
value range and largest multiplicity over the first `entries` entries (one
pass with uproot), with the bytes it takes on disk and in memory; `--spec`
prints a starting spec (docs/training.md) built from what was seen.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["inspect_file", "starting_spec", "format_report"]


def _numeric(branch) -> bool:
    try:
        interp = branch.interpretation
    except Exception:
        return False
    name = type(interp).__name__
    if name == "AsDtype":
        return interp.from_dtype.kind in "biuf" and interp.from_dtype.shape == ()
    if name == "AsJagged":
        inner = interp.content
        return type(inner).__name__ == "AsDtype" and inner.from_dtype.kind in "biuf" and inner.from_dtype.shape == ()
    return False


def inspect_file(path: str, tree: str = "Events", entries: int = 1000, branches: Optional[Sequence[str]] = None,
                 **uproot_options) -> dict:
    """One pass over the first `entries` entries of `path`'s `tree`: a dict
    (entries, flat/jagged/other counts, per branch: type, kind, min, max,
    max multiplicity, bytes on disk and in memory, seconds)."""
    import awkward as ak
    import uproot

    start = time.perf_counter()
    with uproot.open(path, **uproot_options) as f:
        if tree not in f:
            trees = sorted({k.split(";")[0] for k, c in f.classnames().items() if c.startswith("TTree")})
            raise ValueError(f"{path}: no tree `{tree}` (trees: {trees})")
        t = f[tree]
        names = list(branches) if branches else [k for k in t.keys() if not t[k].branches]
        missing = [b for b in names if b not in t]
        if missing:
            raise ValueError(f"{path}:{tree}: no branch {missing[0]!r}")
        numeric = [b for b in names if _numeric(t[b])]
        stop = min(entries, t.num_entries)
        arrays = t.arrays(numeric, entry_stop=stop, library="ak") if numeric and stop > 0 else None
        rows: List[dict] = []
        for b in names:
            br = t[b]
            row = {"name": b, "type": br.typename, "kind": "other",
                   "disk_bytes": int(br.compressed_bytes), "bytes": int(br.uncompressed_bytes)}
            if b in numeric:
                arr = arrays[b] if arrays is not None else None
                row["kind"] = "jagged" if type(br.interpretation).__name__ == "AsJagged" else "flat"
                if arr is not None and len(arr):
                    flat = ak.to_numpy(ak.flatten(arr, axis=None)) if row["kind"] == "jagged" else ak.to_numpy(arr)
                    if row["kind"] == "jagged":
                        row["max_count"] = int(ak.max(ak.num(arr, axis=1)))
                    row["memory_bytes"] = int(ak.Array(arr).nbytes)
                    if flat.size:
                        row["min"] = float(np.min(flat))
                        row["max"] = float(np.max(flat))
            rows.append(row)
        kinds = Counter(r["kind"] for r in rows)
        return {"file": str(path), "tree": tree, "entries": int(t.num_entries), "read": int(stop),
                "flat": kinds["flat"], "jagged": kinds["jagged"], "other": kinds["other"],
                "memory_bytes": int(sum(r.get("memory_bytes", 0) for r in rows)),
                "branches": rows, "seconds": time.perf_counter() - start}


def _collections(report: dict) -> Dict[str, List[dict]]:
    groups: Dict[str, List[dict]] = {}
    for r in report["branches"]:
        if r["kind"] == "jagged" and "_" in r["name"] and "float" in r["type"]:
            groups.setdefault(r["name"].split("_", 1)[0], []).append(r)
    return groups


def starting_spec(report: dict, max_features: int = 4) -> str:
    """A spec to start from: the largest float collection as a jagged input
    (padded to its largest multiplicity seen, at most 16, sorted by its first
    branch), and up to `max_features` flat float branches as a flat input."""
    lines = [f"# A starting spec from {report['file']} (python -m tensorgate inspect --spec); see docs/training.md.",
             f'tree = "{report["tree"]}"', "", "[[inputs]]"]
    groups = _collections(report)
    if groups:
        name, rows = max(groups.items(), key=lambda kv: len(kv[1]))
        rows = rows[:max_features]
        pad = max(1, min(16, max(r.get("max_count", 1) for r in rows)))
        lines += [f'name = "{name.lower()}"', f"pad = {pad}", f'sort = "{rows[0]["name"]}"',
                  "features = [" + ", ".join(f'"{r["name"]}"' for r in rows) + "]", "", "[[inputs]]"]
    flats = [r for r in report["branches"] if r["kind"] == "flat" and "float" in r["type"]
             and r.get("min") is not None and r["min"] != r["max"]][:max_features]
    lines += ['name = "event"', "features = [" + ", ".join(f'"{r["name"]}"' for r in flats) + "]", "",
              "# [labels]", '# classes = ["background", "signal"]',
              '# files = { background = ["bkg.root"], signal = ["sig.root"] }', ""]
    return "\n".join(lines)


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def format_report(report: dict, match: Optional[str] = None) -> str:
    """The report as a table (branches whose name matches the regex `match`)."""
    out = [f"{report['file']}:{report['tree']}: {report['entries']} entries ({report['read']} read), "
           f"{report['flat']} flat, {report['jagged']} jagged, {report['other']} other branches, "
           f"{_human(report['memory_bytes'])} in memory for the entries read",
           f"{'BRANCH':<32} {'TYPE':<14} {'KIND':<6} {'MIN':>12} {'MAX':>12} {'MAX N':>6} {'DISK':>9} {'MEMORY':>9}"]
    rx = re.compile(match) if match else None
    for r in report["branches"]:
        if rx and not rx.search(r["name"]):
            continue
        fmt = lambda k: f"{r[k]:>12.6g}" if k in r else f"{'':>12}"  # noqa: E731
        out.append(f"{r['name']:<32} {r['type'][:14]:<14} {r['kind']:<6} {fmt('min')} {fmt('max')} "
                   f"{r.get('max_count', ''):>6} {_human(r['disk_bytes']):>9} {_human(r.get('memory_bytes', 0)):>9}")
    return "\n".join(out)


def to_json(reports: Sequence[dict]) -> str:
    """The reports as JSON."""
    return json.dumps(list(reports), indent=1)
