"""The Open Inference Protocol (KServe v2) fronts against Triton's own
Python client, `tritonclient[http,grpc]` from PyPI, unchanged: a real
tensorgate-host (and a real gateway with two workers) on 127.0.0.1, the
bundled applications, answers compared with PyTorch's reference outputs
(made by scripts/make_models.py). docs/oip.md is what these tests hold it to."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from engine import NATS_SERVER, start_engine, stop, wait_for

tritonclient = pytest.importorskip("tritonclient")
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HOST_BIN = ROOT / "target" / "release" / "tensorgate-host"
GATEWAY_BIN = ROOT / "target" / "release" / "tensorgate-gateway"
REPOSITORY = ROOT / "target" / "repository"
MULTI_IO = ROOT / "plugins" / "tensors" / "bundles" / "multi-io"
TABULAR = ROOT / "plugins" / "tabular"
IMAGE = ROOT / "plugins" / "image"
APPS = ("tabular", "multi-io", "image")
MAX_FRAME_BYTES = 8 << 20
TIMEOUT_S = 90


class Served:
    """Where one host or gateway serves the protocol."""

    def __init__(self, state: Path):
        self.http = (state / "http-listening").read_text().strip()
        self.grpc = (state / "grpc-listening").read_text().strip()

    def clients(self):
        return httpclient.InferenceServerClient(url=self.http), grpcclient.InferenceServerClient(url=self.grpc)


TABULAR_ONNX = ROOT / "plugins" / "tensors" / "bundles" / "tabular-onnx"


def repository_copy(work: Path) -> Path:
    """A private repository with the applications these tests use (unload
    deletes), and the tabular MLP as ONNX beside them."""
    repo = work / "repository"
    for app in APPS:
        shutil.copytree(REPOSITORY / app, repo / app)
    onnx = repo / "tabular-onnx" / "1"
    shutil.copytree(TABULAR_ONNX, onnx)
    shutil.copy(REPOSITORY / "multi-io" / "1" / "plugin.wasm", onnx / "plugin.wasm")
    return repo


def oip_flags():
    return ["--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--max-frame-bytes", str(MAX_FRAME_BYTES)]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    for path in (HOST_BIN, REPOSITORY):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/setup")
    work = tmp_path_factory.mktemp("oip-host")
    repo = repository_copy(work)
    state, log = work / "state", work / "host.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([str(HOST_BIN), "serve", "--repository", str(repo), "--listen", "127.0.0.1:0",
                                 "--state-dir", str(state), "--threads", "1", *oip_flags()],
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(state / "listening", proc, "tensorgate-host", log, TIMEOUT_S)
        yield Served(state)
    finally:
        stop([proc])


@contextlib.contextmanager
def fleet(work: Path, workers: int):
    """An engine, `workers` workers and one gateway serving the protocol."""
    for path in (HOST_BIN, GATEWAY_BIN, NATS_SERVER):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/setup")
    repo = repository_copy(work)
    procs = []
    try:
        url = start_engine(work, procs)
        for i in range(workers):
            state, log = work / f"worker{i}", work / f"worker{i}.log"
            with open(log, "wb") as f:
                procs.append(subprocess.Popen([str(HOST_BIN), "worker", "--nats", url, "--heartbeat-ms", "200", "--state-dir", str(state),
                                               "--repository", str(repo), "--threads", "1"],
                                              stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            wait_for(state / "worker", procs[-1], f"worker {i}", log, TIMEOUT_S)
        state, log = work / "gateway", work / "gateway.log"
        with open(log, "wb") as f:
            procs.append(subprocess.Popen([str(GATEWAY_BIN), "--nats", url, "--heartbeat-ms", "200", "--state-dir", str(state),
                                           "--listen", "127.0.0.1:0", *oip_flags()],
                                          stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        wait_for(state / "listening", procs[-1], "gateway", log, TIMEOUT_S)
        served = Served(state)
        # Until the workers' adverts arrive the gateway routes nothing.
        http, _ = served.clients()
        deadline = time.monotonic() + TIMEOUT_S
        while not all(http.is_model_ready(app) for app in APPS):
            assert time.monotonic() < deadline, "the gateway never saw the workers' applications"
            time.sleep(0.1)
        yield served
    finally:
        stop(procs)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with fleet(tmp_path_factory.mktemp("oip-fleet"), 2) as served:
        yield served


def multi_io_inputs(module, binary=True):
    sample = np.load(MULTI_IO / "sample.npz")
    inputs = []
    for name in ("x", "y"):
        t = module.InferInput(name, list(sample[name].shape), "FP32")
        if module is httpclient:
            t.set_data_from_numpy(sample[name], binary_data=binary)
        else:
            t.set_data_from_numpy(sample[name])
        inputs.append(t)
    return inputs


def check_multi_io(result):
    reference = np.load(MULTI_IO / "reference.npz")
    for name in ("h", "s"):
        got = result.as_numpy(name)
        assert got.dtype == reference[name].dtype, name
        np.testing.assert_allclose(got, reference[name], rtol=0, atol=1e-5)


def bytes_input(module, payload: bytes):
    t = module.InferInput("payload", [1], "BYTES")
    t.set_data_from_numpy(np.array([payload], dtype=np.object_))
    return t


def check_tabular(result, case):
    reply = result.as_numpy("reply")[0]
    assert result.as_numpy("content_type")[0] == b"application/json"
    scores = json.loads(reply)
    for label, want in case["scores"].items():
        assert abs(scores[label] - want) <= 1e-5, (label, scores, want)


def check_image(result, case):
    top = json.loads(result.as_numpy("reply")[0])["top_k"]
    assert top[0]["label"] == case["label"]
    assert abs(top[0]["score"] - case["scores"][case["label"]]) <= 1e-5


# ---- a host ------------------------------------------------------------------

def test_server_metadata_live_and_ready(host):
    http, grpc = host.clients()
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready()
    for meta in (http.get_server_metadata(), grpc.get_server_metadata(as_json=True)):
        assert meta["name"] == "tensorgate"
        assert "binary_tensor_data" in meta["extensions"] and "model_configuration" in meta["extensions"]
    assert http.is_model_ready("multi-io") and grpc.is_model_ready("multi-io", "1")
    assert not http.is_model_ready("nope") and not grpc.is_model_ready("multi-io", "9")


def test_model_metadata_and_config_describe_the_manifest(host):
    http, grpc = host.clients()
    for meta in (http.get_model_metadata("multi-io"), grpc.get_model_metadata("multi-io", as_json=True)):
        assert meta["name"] == "multi-io" and meta["versions"] == ["1"]
        assert meta["platform"] == "pytorch_libtorch"
        assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]] == [("x", "FP32", [-1, 4]), ("y", "FP32", [-1, 3])]
        assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [("h", "FP32"), ("s", "FP64")]
    http_config = http.get_model_config("multi-io")
    grpc_config = grpc.get_model_config("multi-io", as_json=True)["config"]
    for config in (http_config, grpc_config):
        assert config["name"] == "multi-io"
        assert int(config["max_batch_size"]) == 32
        assert [(i["name"], i["data_type"], [int(d) for d in i["dims"]]) for i in config["input"]] == [("x", "TYPE_FP32", [4]), ("y", "TYPE_FP32", [3])]
        assert [(o["name"], o["data_type"]) for o in config["output"]] == [("h", "TYPE_FP32"), ("s", "TYPE_FP64")]
        assert "dynamic_batching" in config
    # An application with its own plugin: one BYTES element in, its reply out.
    meta = http.get_model_metadata("tabular")
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [("payload", "BYTES")]
    assert [t["name"] for t in meta["outputs"]] == ["reply", "content_type"]
    config = grpc.get_model_config("image", as_json=True)["config"]
    assert config["input"][0]["data_type"] == "TYPE_STRING"
    assert config["parameters"]["content_types"]["string_value"] == "image/png"


def test_infer_tensors_matches_pytorch_over_http_json_binary_and_grpc(host):
    http, grpc = host.clients()
    # JSON tensors, and the binary extension both ways.
    check_multi_io(http.infer("multi-io", multi_io_inputs(httpclient, binary=False),
                              outputs=[httpclient.InferRequestedOutput(n, binary_data=False) for n in ("h", "s")]))
    check_multi_io(http.infer("multi-io", multi_io_inputs(httpclient), outputs=[httpclient.InferRequestedOutput(n, binary_data=True) for n in ("h", "s")]))
    result = grpc.infer("multi-io", multi_io_inputs(grpcclient), model_version="1", request_id="req-7")
    check_multi_io(result)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("multi-io", "1", "req-7")
    # Requested outputs only.
    only = grpc.infer("multi-io", multi_io_inputs(grpcclient), outputs=[grpcclient.InferRequestedOutput("s")])
    assert only.as_numpy("h") is None and only.as_numpy("s") is not None


def test_an_onnx_model_is_described_and_served_the_same(host):
    http, grpc = host.clients()
    meta = grpc.get_model_metadata("tabular-onnx", as_json=True)
    assert meta["platform"] == "onnxruntime_onnx"
    config = http.get_model_config("tabular-onnx")
    assert (config["platform"], config["backend"]) == ("onnxruntime_onnx", "onnxruntime")
    assert [int(d) for d in config["input"][0]["dims"]] == [16]
    sample, reference = np.load(TABULAR_ONNX / "sample.npy"), np.load(TABULAR_ONNX / "reference.npy")
    for module, client in ((httpclient, http), (grpcclient, grpc)):
        x = module.InferInput("x", list(sample.shape), "FP32")
        x.set_data_from_numpy(sample)
        np.testing.assert_allclose(client.infer("tabular-onnx", [x]).as_numpy("scores"), reference, rtol=0, atol=1e-5)


def test_bytes_items_reach_plugins_json_and_png(host):
    http, grpc = host.clients()
    tabular = json.loads((TABULAR / "reference.json").read_text())
    for case in tabular["cases"][:4]:
        payload = json.dumps(case["request"]).encode()
        check_tabular(http.infer("tabular", [bytes_input(httpclient, payload)]), case)
        check_tabular(grpc.infer("tabular", [bytes_input(grpcclient, payload)]), case)
    image = json.loads((IMAGE / "reference.json").read_text())
    for case in image["cases"]:
        png = (IMAGE / "samples" / case["file"]).read_bytes()
        check_image(grpc.infer("image", [bytes_input(grpcclient, png)], parameters={"content_type": "image/png"}), case)
        check_image(http.infer("image", [bytes_input(httpclient, png)]), case)


def test_async_and_streaming_infer(host):
    http = httpclient.InferenceServerClient(url=host.http, concurrency=8)
    pending = [http.async_infer("multi-io", multi_io_inputs(httpclient)) for _ in range(16)]
    for p in pending:
        check_multi_io(p.get_result())
    grpc = grpcclient.InferenceServerClient(url=host.grpc)
    done = []
    grpc.async_infer("multi-io", multi_io_inputs(grpcclient), callback=lambda result, error: done.append((result, error)))
    deadline = time.monotonic() + 30
    while not done:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert done[0][1] is None
    check_multi_io(done[0][0])
    # Many requests on one stream, answered as each finishes; an error is one response, not the stream's end.
    stream = []
    grpc.start_stream(callback=lambda result, error: stream.append((result, error)))
    try:
        for i in range(40):
            grpc.async_stream_infer("multi-io", multi_io_inputs(grpcclient), request_id=str(i))
        grpc.async_stream_infer("nope", multi_io_inputs(grpcclient), request_id="bad")
        for i in range(40, 50):
            grpc.async_stream_infer("multi-io", multi_io_inputs(grpcclient), request_id=str(i))
        deadline = time.monotonic() + 60
        while len(stream) < 51:
            assert time.monotonic() < deadline, f"{len(stream)} of 51 stream responses"
            time.sleep(0.01)
    finally:
        grpc.stop_stream()
    errors = [e for r, e in stream if e is not None]
    assert len(errors) == 1 and "model `nope`" in errors[0].message()
    ids = sorted(int(r.get_response().id) for r, e in stream if e is None)
    assert ids == list(range(50))
    for r, e in stream:
        if e is None:
            check_multi_io(r)


def expect_error(call, status: str, text: str):
    with pytest.raises(InferenceServerException) as e:
        call()
    assert e.value.status() is not None and status in str(e.value.status()), (e.value.status(), e.value.message())
    assert text in e.value.message(), e.value.message()


def test_errors_map_to_statuses_and_name_what_is_wrong(host):
    http, grpc = host.clients()
    expect_error(lambda: grpc.infer("nope", multi_io_inputs(grpcclient)), "NOT_FOUND", "model `nope`")
    expect_error(lambda: http.infer("nope", multi_io_inputs(httpclient)), "404", "model `nope`")
    expect_error(lambda: grpc.infer("multi-io", multi_io_inputs(grpcclient), model_version="9"), "NOT_FOUND", "version 9")
    expect_error(lambda: grpc.infer("multi-io", multi_io_inputs(grpcclient), model_version="v1"), "INVALID_ARGUMENT", "not a version number")
    # Wrong data type, wrong shape, a missing input.
    x = grpcclient.InferInput("x", [3, 4], "FP64")
    x.set_data_from_numpy(np.zeros((3, 4), np.float64))
    expect_error(lambda: grpc.infer("multi-io", [x, multi_io_inputs(grpcclient)[1]]), "INVALID_ARGUMENT", "input `x` is FP64, model `multi-io` takes FP32")
    x = httpclient.InferInput("x", [3, 5], "FP32")
    x.set_data_from_numpy(np.zeros((3, 5), np.float32))
    expect_error(lambda: http.infer("multi-io", [x, multi_io_inputs(httpclient)[1]]), "400", "input `x` has shape [3, 5]")
    expect_error(lambda: grpc.infer("multi-io", multi_io_inputs(grpcclient)[:1]), "INVALID_ARGUMENT", "input `y` is missing")
    expect_error(lambda: grpc.infer("multi-io", multi_io_inputs(grpcclient), outputs=[grpcclient.InferRequestedOutput("zz")]),
                 "INVALID_ARGUMENT", "no output `zz`")
    # A plugin application given tensors, and a plugin's own error.
    expect_error(lambda: grpc.infer("tabular", multi_io_inputs(grpcclient)), "INVALID_ARGUMENT", "takes one BYTES input")
    expect_error(lambda: http.infer("image", [bytes_input(httpclient, b"not a png")]), "400", "")
    # Shared memory is refused, and says why.
    expect_error(lambda: grpc.get_system_shared_memory_status(), "UNIMPLEMENTED", "not supported")
    expect_error(lambda: http.get_cuda_shared_memory_status(), "501", "not supported")


def raw_post(url: str, body: bytes, headers=None):
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


SHORT_BINARY = b'{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}' + b"\0" * 4


def test_malformed_http_bodies_fail_that_request_only(host):
    url = f"http://{host.http}/v2/models/multi-io/infer"
    cases = [
        (b"{not json", {}, 400, "request JSON"),
        (b'{"inputs":[{"name":"x","shape":[3,4],"datatype":"FP32","data":[1,2]}]}', {}, 400, "needs 48 bytes (12 elements)"),
        (SHORT_BINARY, {"Inference-Header-Content-Length": str(len(SHORT_BINARY) - 4)}, 400, "`binary_data_size` is 8, only 4 binary bytes are left"),
        (b'{"inputs":[]}', {"Inference-Header-Content-Length": "999"}, 400, "says 999 bytes of JSON"),
        (b"x" * (MAX_FRAME_BYTES + 1), {}, 413, "max_frame_bytes"),
    ]
    for body, headers, status, text in cases:
        got, reply = raw_post(url, body, headers)
        assert got == status, (got, reply[:200])
        assert text in json.loads(reply)["error"], reply[:300]
    # The host still serves.
    http, _ = host.clients()
    check_multi_io(http.infer("multi-io", multi_io_inputs(httpclient)))


def test_statistics_count_what_was_served(host):
    http, grpc = host.clients()
    before = grpc.get_inference_statistics("multi-io", as_json=True)["model_stats"][0]
    for _ in range(3):
        grpc.infer("multi-io", multi_io_inputs(grpcclient))
    after = http.get_inference_statistics("multi-io")["model_stats"][0]
    assert after["name"] == "multi-io" and after["version"] == "1"
    assert int(after["inference_count"]) >= int(before.get("inference_count", 0)) + 3
    assert int(after["inference_stats"]["success"]["count"]) >= 3
    everything = http.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} >= set(APPS)


def test_curl_infer_exactly_as_the_doc_shows(host):
    doc = (ROOT / "docs" / "oip.md").read_text()
    block = re.search(r"<!-- curl-infer -->\s*```sh\n(.*?)```", doc, re.S)
    assert block, "docs/oip.md has no curl-infer block"
    command = block.group(1).replace("localhost:8000", host.http)
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["model_name"] == "multi-io"
    reference = np.load(MULTI_IO / "reference.npz")
    h = next(o for o in reply["outputs"] if o["name"] == "h")
    np.testing.assert_allclose(np.array(h["data"], np.float32).reshape(h["shape"])[0], reference["h"][0], atol=1e-5)


def test_repository_index_load_and_unload(host):
    http, grpc = host.clients()
    index = {(m["name"], m["version"]): m["state"] for m in http.get_model_repository_index()}
    assert index[("tabular", "1")] == "READY"
    models = grpc.get_model_repository_index(as_json=True)["models"]
    assert {m["name"] for m in models} >= set(APPS)
    http.load_model("image")
    grpc.load_model("image")
    assert http.is_model_ready("image")
    expect_error(lambda: grpc.load_model("nope"), "NOT_FOUND", "nope")
    grpc.unload_model("image")
    assert not http.is_model_ready("image")
    expect_error(lambda: http.infer("image", [bytes_input(httpclient, b"")]), "404", "image")


# ---- a gateway with two workers ----------------------------------------------

def test_through_a_gateway_the_same(gateway):
    http, grpc = gateway.clients()
    assert http.is_server_ready() and grpc.is_server_ready()
    config = grpc.get_model_config("multi-io", as_json=True)["config"]
    assert int(config["max_batch_size"]) == 32 and config["input"][0]["name"] == "x"
    meta = http.get_model_metadata("tabular")
    assert meta["inputs"][0]["datatype"] == "BYTES"
    for _ in range(4):
        check_multi_io(grpc.infer("multi-io", multi_io_inputs(grpcclient)))
        check_multi_io(http.infer("multi-io", multi_io_inputs(httpclient)))
    tabular = json.loads((TABULAR / "reference.json").read_text())
    case = tabular["cases"][0]
    check_tabular(grpc.infer("tabular", [bytes_input(grpcclient, json.dumps(case["request"]).encode())]), case)
    image = json.loads((IMAGE / "reference.json").read_text())["cases"][0]
    check_image(http.infer("image", [bytes_input(httpclient, (IMAGE / "samples" / image["file"]).read_bytes())]), image)
    stream = []
    grpc.start_stream(callback=lambda result, error: stream.append((result, error)))
    try:
        for i in range(20):
            grpc.async_stream_infer("multi-io", multi_io_inputs(grpcclient), request_id=str(i))
        deadline = time.monotonic() + 60
        while len(stream) < 20:
            assert time.monotonic() < deadline, f"{len(stream)} of 20"
            time.sleep(0.01)
    finally:
        grpc.stop_stream()
    assert all(e is None for _, e in stream)
    expect_error(lambda: grpc.infer("nope", multi_io_inputs(grpcclient)), "NOT_FOUND", "nope")
    # A fleet's counters arrive with the workers' adverts (every 200 ms here).
    deadline = time.monotonic() + 10
    while True:
        stats = http.get_inference_statistics("multi-io")["model_stats"]
        served = sum(int(s["inference_count"]) for s in stats)
        if served >= 8 + 20:
            break
        assert time.monotonic() < deadline, f"the gateway's statistics show {served} of 28 inferences"
        time.sleep(0.1)


# ---- TLS and tokens ------------------------------------------------------------

TOKEN = "oip-predict-secret"


@pytest.fixture(scope="module")
def tls_host(tmp_path_factory):
    import hashlib

    work = tmp_path_factory.mktemp("oip-tls")
    repo = work / "repository"
    shutil.copytree(REPOSITORY / "multi-io", repo / "multi-io")
    access = work / "access.toml"
    access.write_text(f'[[token]]\nrole = "predict"\nsha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\nname = "analysis"\n')
    state, log = work / "state", work / "host.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([str(HOST_BIN), "serve", "--repository", str(repo), "--listen", "127.0.0.1:0", "--state-dir", str(state),
                                 "--access", str(access), "--oip-tls", *oip_flags()],
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(state / "listening", proc, "tensorgate-host", log, TIMEOUT_S)
        yield Served(state), state / "tls" / "cert.pem"
    finally:
        stop([proc])


def test_tls_and_bearer_tokens(tls_host):
    served, pem = tls_host
    http = httpclient.InferenceServerClient(url=served.http, ssl=True, ssl_options={"ca_certs": str(pem)})
    grpc = grpcclient.InferenceServerClient(url=served.grpc, ssl=True, root_certificates=str(pem))
    assert http.is_server_live() and grpc.is_server_live()
    # Predict needs the token, in the Authorization header or the gRPC metadata.
    expect_error(lambda: http.infer("multi-io", multi_io_inputs(httpclient)), "403", "needs the predict role")
    expect_error(lambda: grpc.infer("multi-io", multi_io_inputs(grpcclient)), "PERMISSION_DENIED", "no token was presented")
    expect_error(lambda: grpc.infer("multi-io", multi_io_inputs(grpcclient), headers={"authorization": "Bearer wrong"}),
                 "PERMISSION_DENIED", "not known")
    check_multi_io(http.infer("multi-io", multi_io_inputs(httpclient), headers={"Authorization": f"Bearer {TOKEN}"}))
    check_multi_io(grpc.infer("multi-io", multi_io_inputs(grpcclient), headers={"authorization": f"Bearer {TOKEN}"}))
    expect_error(lambda: grpc.get_model_metadata("multi-io"), "PERMISSION_DENIED", "predict role")
    assert grpc.get_model_metadata("multi-io", headers={"authorization": f"Bearer {TOKEN}"}).name == "multi-io"
    # Plain HTTP to the TLS port gets nowhere.
    with pytest.raises(Exception):
        httpclient.InferenceServerClient(url=served.http, network_timeout=5).is_server_live()
