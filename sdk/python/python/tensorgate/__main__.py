"""`python -m tensorgate`: status, models, submit files, run ROOT trees, manage
models; inspect ROOT files, train on a feature spec, predict with it (docs/training.md).

    python -m tensorgate --host 127.0.0.1:7443 --fingerprint HEX status
    python -m tensorgate submit --model multi-io plugins/tensors/bundles/multi-io/sample.npz
    python -m tensorgate root --model nanoaod-jets --tree Events \\
        --branches jets=Jet_pt,Jet_eta,Jet_phi --branches met=MET_pt --pad 10 \\
        --output scores.root nano_dy.root root://host//store/file.root

Settings come from flags, then TENSORGATE_HOST / TENSORGATE_FINGERPRINT /
TENSORGATE_CA, as for the Rust `tensorgate` CLI. Exit codes: 0 ok, 1 some item
failed, 2 error.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from .client import Client
from .errors import ItemError, TensorgateError

CONTENT_TYPES = {".json": "application/json", ".npy": "application/x-npy", ".npz": "application/x-npz",
                 ".png": "image/png"}
EXTENSIONS = {"application/x-npz": "npz", "application/x-npy": "npy", "image/png": "png"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tensorgate", description="Submit work to a tensorgate host")
    p.add_argument("--host", help="host address (default $TENSORGATE_HOST or 127.0.0.1:7443)")
    p.add_argument("--fingerprint", help="pin the host certificate's SHA-256 fingerprint")
    p.add_argument("--ca", help="verify the host certificate against this CA file (PEM)")
    p.add_argument("--token", help="bearer token (default $TENSORGATE_TOKEN)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="the host's status (JSON)")
    sub.add_parser("models", help="the loaded models")
    u = sub.add_parser("upload", help="upload a bundle (directory or .tar.zst); needs admin")
    u.add_argument("path")
    u.add_argument("--replace", action="store_true", help="overwrite the same name and version")
    f = sub.add_parser("fetch", help="download a bundle as .tar.zst; needs admin")
    f.add_argument("model")
    f.add_argument("--version", type=int)
    f.add_argument("--output", "-o", required=True)
    d = sub.add_parser("delete", help="remove a model version (or all versions); needs admin")
    d.add_argument("model")
    d.add_argument("--version", type=int)
    rl = sub.add_parser("reload", help="make the host re-read its repository; needs admin")
    rl.add_argument("model", nargs="?")
    pr = sub.add_parser("promote", help="make a version the model's default; needs admin")
    pr.add_argument("model")
    pr.add_argument("version", type=int)
    rb = sub.add_parser("rollback", help="go back to the model's previous default version; needs admin")
    rb.add_argument("model")
    s = sub.add_parser("submit", help="send files as items; one JSON line per result")
    s.add_argument("--model", required=True)
    s.add_argument("--version", type=int)
    s.add_argument("--content-type", help="content type of every item (default: by extension)")
    s.add_argument("--output-dir", help="write each result payload to DIR/<stem>.<ext>")
    s.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="metadata sent with every item (repeatable)")
    s.add_argument("files", nargs="+")
    r = sub.add_parser("root", help="run a ROOT tree through a model (uproot + awkward)")
    r.add_argument("--model", required=True)
    r.add_argument("--version", type=int)
    r.add_argument("--tree", default="Events")
    r.add_argument("--branches", action="append", required=True,
                   help="INPUT=BR1,BR2,... (repeat per model input), or BR1,BR2 for one unnamed input")
    r.add_argument("--pad", action="append", default=[],
                   help="N for every jagged branch, or BRANCH=N (repeatable)")
    r.add_argument("--pad-value", type=float, default=0.0)
    r.add_argument("--no-mask", action="store_true", help="no <input>_mask arrays for jagged inputs")
    r.add_argument("--step-size", default="100000", help="entries per chunk, or a size such as '50 MB'")
    r.add_argument("--rows-per-item", type=int, default=256)
    r.add_argument("--concurrency", type=int, default=4)
    r.add_argument("--output", help="write results to a .root, .npz or .parquet file")
    r.add_argument("files", nargs="+", help="ROOT files: paths or root:// URLs (passed to uproot as given)")
    i = sub.add_parser("inspect", help="a ROOT tree's branches: types, ranges, multiplicities, memory (no host)")
    i.add_argument("files", nargs="+")
    i.add_argument("--tree", default="Events")
    i.add_argument("--entries", type=int, default=1000, help="entries read for ranges and multiplicities")
    i.add_argument("--match", help="only branches whose name matches this regular expression")
    i.add_argument("--json", action="store_true", help="the report as JSON")
    i.add_argument("--spec", action="store_true", help="print a starting feature spec instead")
    t = sub.add_parser("train", help="train a torch.nn.Module on a feature spec's data and write a bundle (no host)")
    t.add_argument("--spec", required=True, help="the feature spec (TOML, docs/training.md)")
    t.add_argument("--model", required=True, help="MODULE:CLASS or path/to/file.py:CLASS (a torch.nn.Module)")
    t.add_argument("--model-args", default="{}", help="JSON keyword arguments for the class")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--bundle", help="write the bundle to this folder (complete, or not at all)")
    t.add_argument("--name", help="the application's name (default: the bundle folder's name)")
    t.add_argument("--version", type=int, default=1)
    t.add_argument("--files", nargs="*", default=[], help="files to read (default: the spec's labels.files)")
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--validation", type=float, default=0.2, help="fraction of each file's entries for validation")
    t.add_argument("--step-size", type=int, default=10_000, help="entries read per chunk")
    t.add_argument("--shuffle-buffer", type=int, default=4096, help="entries shuffled together when streaming")
    t.add_argument("--cache", choices=["auto", "yes", "no"], default="auto",
                   help="keep the inputs in memory after the first epoch (auto: when they take at most 1 GiB)")
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, or auto (CUDA when present)")
    t.add_argument("--format", default="torchscript", choices=["torchscript", "onnx", "aoti"],
                   help="the exported model: TorchScript (model.pt), ONNX (model.onnx, run by ONNX Runtime) "
                        "or AOTInductor (model.pt2, compiled for this machine's CPU)")
    t.add_argument("--plugin", help="the features plugin (.wasm; default: target/plugins/.../features_plugin.wasm)")
    t.add_argument("--replace", action="store_true", help="replace an existing bundle folder (and version on upload)")
    t.add_argument("--upload", metavar="HOST", help="install the bundle on this host or gateway (needs admin)")
    ti = sub.add_parser("train-images", help="train a CNN on PNG images + labels.csv; a bundle for the image plugin")
    ti.add_argument("--images", required=True, help="folder of PNG images")
    ti.add_argument("--labels", help="file,label lines (default: IMAGES/labels.csv)")
    ti.add_argument("--classes", help="comma-separated class order (default: order of first appearance)")
    ti.add_argument("--model", required=True, help="MODULE:CLASS or path/to/file.py:CLASS ([N, 3, H, W] -> logits)")
    ti.add_argument("--model-args", default="{}")
    ti.add_argument("--size", type=int, nargs=2, default=[32, 32], metavar=("H", "W"))
    ti.add_argument("--mean", type=float, nargs=3, default=[0.5, 0.5, 0.5])
    ti.add_argument("--std", type=float, nargs=3, default=[0.25, 0.25, 0.25])
    ti.add_argument("--epochs", type=int, default=5)
    ti.add_argument("--batch-size", type=int, default=32)
    ti.add_argument("--lr", type=float, default=3e-3)
    ti.add_argument("--seed", type=int, default=0)
    ti.add_argument("--validation", type=float, default=0.2)
    ti.add_argument("--top-k", type=int, default=3)
    ti.add_argument("--bundle")
    ti.add_argument("--name")
    ti.add_argument("--version", type=int, default=1)
    ti.add_argument("--plugin", help="the image plugin (.wasm; default: target/plugins/.../image_plugin.wasm)")
    ti.add_argument("--replace", action="store_true")
    ti.add_argument("--upload", metavar="HOST")
    pp = sub.add_parser("predict", help="run ROOT files through a model trained on a feature spec")
    pp.add_argument("--spec", required=True, help="the bundle folder (its spec.json), its spec.json, or a TOML spec")
    pp.add_argument("--model", required=True)
    pp.add_argument("--version", type=int)
    pp.add_argument("--output", required=True, help="a .root, .parquet or .npz file")
    pp.add_argument("--step-size", default="100000")
    pp.add_argument("--rows-per-item", type=int, default=256)
    pp.add_argument("--concurrency", type=int, default=4)
    pp.add_argument("files", nargs="+")
    return p


def _branches(specs):
    if len(specs) == 1 and "=" not in specs[0]:
        return specs[0].split(",")
    out = {}
    for spec in specs:
        name, sep, names = spec.partition("=")
        if not sep or not names:
            raise ValueError(f"--branches {spec!r}: use INPUT=BR1,BR2,...")
        out[name] = names.split(",")
    return out


def _pad(specs):
    if not specs:
        return None
    if len(specs) == 1 and "=" not in specs[0]:
        return int(specs[0])
    return {k: int(v) for k, _, v in (s.partition("=") for s in specs)}


def _summarise(value):
    if isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values()):
        return {k: {"shape": list(v.shape), "dtype": str(v.dtype), "values": v.ravel()[:8].tolist()}
                for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {"shape": list(value.shape), "dtype": str(value.dtype), "values": value.ravel()[:8].tolist()}
    if isinstance(value, bytes):
        return {"bytes": len(value)}
    return value


def _submit(client: Client, args) -> int:
    files = [pathlib.Path(f) for f in args.files]
    payloads = [f.read_bytes() for f in files]
    types = {args.content_type or CONTENT_TYPES.get(f.suffix.lower(), "application/octet-stream") for f in files}
    if len(types) > 1:
        raise ValueError(f"files of several content types {sorted(types)}: give --content-type or submit them apart")
    raw = args.output_dir is not None
    meta = {}
    for kv in args.meta:
        key, sep, value = kv.partition("=")
        if not sep:
            raise ValueError(f"--meta {kv!r}: use KEY=VALUE")
        meta[key] = value
    failed = 0
    for index, value, reply_meta in client.stream(args.model, payloads, args.version, content_type=types.pop(),
                                                  errors="return", metadata=meta or None, with_metadata=True):
        line = {"index": index, "file": str(files[index])}
        if reply_meta:
            line["metadata"] = reply_meta
        if isinstance(value, ItemError):
            failed += 1
            line.update(ok=False, code=value.code, error=value.message)
        elif raw:
            out = pathlib.Path(args.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            ext = EXTENSIONS.get(_content_type_of(value), "json" if isinstance(value, (dict, list)) else "bin")
            dest = out / f"{files[index].stem}.{ext}"
            _write(dest, value)
            line.update(ok=True, output=str(dest))
        else:
            line.update(ok=True, result=_summarise(value))
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


def _content_type_of(value) -> str:
    if isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
        return "application/x-npz"
    if isinstance(value, np.ndarray):
        return "application/x-npy"
    return ""


def _write(dest: pathlib.Path, value) -> None:
    if isinstance(value, np.ndarray):
        np.save(dest, value)
    elif isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values()):
        np.savez(dest, **value)
    elif isinstance(value, (bytes, bytearray)):
        dest.write_bytes(value)
    else:
        dest.write_text(json.dumps(value))


def _root(client: Client, args) -> int:
    from .root import predict_tree

    step = int(args.step_size) if args.step_size.isdigit() else args.step_size
    out = predict_tree(client, args.model, args.files, args.tree, _branches(args.branches), step_size=step,
                       pad=_pad(args.pad), pad_value=args.pad_value, mask=not args.no_mask,
                       rows_per_item=args.rows_per_item, concurrency=args.concurrency, version=args.version,
                       output=args.output)
    print(json.dumps({"entries": out.entries, "chunks": out.chunks, "seconds": round(out.seconds, 4),
                      "events_per_second": round(out.events_per_second, 1), "output": args.output,
                      "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in out.items()}}))
    return 0


def _inspect(args) -> int:
    from .inspect import format_report, inspect_file, starting_spec, to_json

    reports = [inspect_file(f, args.tree, args.entries) for f in args.files]
    if args.spec:
        print(starting_spec(reports[0]))
    elif args.json:
        print(to_json(reports))
    else:
        print("\n\n".join(format_report(r, args.match) for r in reports))
    return 0


def _train(args) -> int:
    from .train import train

    client = None
    if args.upload:
        client = Client(args.upload, fingerprint=args.fingerprint, ca=args.ca, token=args.token)
    try:
        result = train(args.spec, args.model, files=args.files, epochs=args.epochs, bundle=args.bundle,
                       name=args.name, version=args.version, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       validation=args.validation, step_size=args.step_size, shuffle_buffer=args.shuffle_buffer,
                       device=args.device, model_args=json.loads(args.model_args), plugin=args.plugin,
                       replace=args.replace, upload=client, log=lambda m: print(m, file=sys.stderr, flush=True),
                       cache={"auto": "auto", "yes": True, "no": False}[args.cache], model_format=args.format)
    finally:
        if client is not None:
            client.close()
    print(json.dumps({"bundle": result.bundle, "entries": result.entries, "epochs": result.epochs,
                      "upload": result.upload}))
    return 0


def _train_images(args) -> int:
    from .images import train_images

    client = Client(args.upload, fingerprint=args.fingerprint, ca=args.ca, token=args.token) if args.upload else None
    try:
        result = train_images(args.images, args.model, labels=args.labels,
                              classes=args.classes.split(",") if args.classes else None, size=tuple(args.size),
                              mean=tuple(args.mean), std=tuple(args.std), epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, seed=args.seed, validation=args.validation,
                              bundle=args.bundle, name=args.name, version=args.version, plugin=args.plugin,
                              top_k=args.top_k, replace=args.replace, model_args=json.loads(args.model_args),
                              upload=client, log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        if client is not None:
            client.close()
    print(json.dumps({"bundle": result.bundle, "images": result.entries, "epochs": result.epochs,
                      "upload": result.upload}))
    return 0


def _predict(client: Client, args) -> int:
    from .root import predict_tree
    from .spec import Spec

    path = pathlib.Path(args.spec)
    if path.is_dir():  # a bundle written by `train`: its compiled, fitted spec
        path = path / "spec.json"
    spec = Spec.from_json(path.read_text(), str(path)) if path.suffix == ".json" else str(path)
    step = int(args.step_size) if args.step_size.isdigit() else args.step_size
    out = predict_tree(client, args.model, args.files, spec=spec, step_size=step, rows_per_item=args.rows_per_item,
                       concurrency=args.concurrency, version=args.version, output=args.output)
    print(json.dumps({"entries": out.entries, "chunks": out.chunks, "seconds": round(out.seconds, 4),
                      "output": args.output,
                      "columns": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in out.items()}}))
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "train":
            return _train(args)
        if args.command == "train-images":
            return _train_images(args)
        with Client(args.host, fingerprint=args.fingerprint, ca=args.ca, token=args.token) as client:
            if args.command == "status":
                print(json.dumps(client.status(), indent=2))
                return 0
            if args.command == "models":
                print(f"{'NAME':<16} {'VERSION':>7} {'DEVICE':<7} {'OK':>9} {'FAILED':>7}  DESCRIPTION")
                for m in client.status()["models"]:
                    print(f"{m['name']:<16} {m['version']:>7} {m['device']:<7} {m['items_ok']:>9} "
                          f"{m['items_failed']:>7}  {m['description']}")
                return 0
            if args.command == "upload":
                print(json.dumps(client.upload(args.path, replace=args.replace), indent=2))
                return 0
            if args.command == "fetch":
                archive = client.fetch(args.model, args.version, path=args.output)
                print(json.dumps({"model": args.model, "output": args.output, "bytes": len(archive)}))
                return 0
            if args.command == "delete":
                print(json.dumps(client.delete(args.model, args.version), indent=2))
                return 0
            if args.command == "reload":
                print(json.dumps(client.reload(args.model), indent=2))
                return 0
            if args.command == "promote":
                print(json.dumps(client.promote(args.model, args.version), indent=2))
                return 0
            if args.command == "rollback":
                print(json.dumps(client.rollback(args.model), indent=2))
                return 0
            if args.command == "submit":
                return _submit(client, args)
            if args.command == "predict":
                return _predict(client, args)
            return _root(client, args)
    except (TensorgateError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
