"""The status page (`GET /status` on the HTTP listener, polling
`GET /v2/tensorgate/status`), rendered by headless Chromium: for a host,
its models; for a gateway with two workers, the models summed over the
fleet and both workers with device, capacity and items held; a
screenshot of each. Skipped, saying why, only where there is no Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from engine import NATS_SERVER, free_port, start_engine, stop, wait_for

ROOT = Path(__file__).resolve().parents[2]
HOST_BIN = ROOT / "target" / "release" / "tensorgate-host"
GATEWAY_BIN = ROOT / "target" / "release" / "tensorgate-gateway"
CLI = ROOT / "target" / "release" / "tensorgate"
REPOSITORY = ROOT / "target" / "repository"
SAMPLE = ROOT / "plugins" / "tabular" / "samples" / "jet-0.json"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: scripts/setup installs Debian's chromium")


class Rows(HTMLParser):
    """The cells of each table row carrying data-model / data-worker, and hidden blocks."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.hidden: set[str] = set()
        self.text: dict[str, str] = {}
        self._row = self._cell = self._id = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "hidden" in a and "id" in a:
            self.hidden.add(a["id"])
        if tag == "tr" and ("data-model" in a or "data-worker" in a):
            self._row = a.get("data-model") or a.get("data-worker")
            self.rows[self._row] = []
        elif tag == "td" and self._row:
            self._cell = ""
        elif "id" in a and tag in ("span", "div"):
            self._id = a["id"]
            self.text[self._id] = ""

    def handle_endtag(self, tag):
        if tag == "td" and self._row and self._cell is not None:
            self.rows[self._row].append(self._cell)
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag in ("span", "div"):
            self._id = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        elif self._id:
            self.text[self._id] += data


def render(url: str, screenshot: Path) -> Rows:
    """The page's DOM after its scripts ran (two polls), and a screenshot."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             "--virtual-time-budget=5000", "--window-size=1400,900"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, "a screenshot with something drawn"
    rows = Rows()
    rows.feed(dom.stdout)
    assert rows.text["error"] == "", rows.text["error"]
    assert rows.text["summary"].endswith(tuple("0123456789M")), f"polled: {rows.text['summary']}"
    return rows


def status_json(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/tensorgate/status", timeout=5) as r:
        assert r.headers["content-type"] == "application/json"
        return json.load(r)


def submit(state: Path, n: int, sample: Path = SAMPLE) -> subprocess.CompletedProcess:
    address, fingerprint = (state / "listening").read_text().strip(), (state / "fingerprint").read_text().strip()
    out = subprocess.run([str(CLI), "--host", address, "--fingerprint", fingerprint, "submit", "--model", "tabular",
                          *[str(sample)] * n], capture_output=True, text=True, timeout=60)
    if sample == SAMPLE:
        assert out.returncode == 0, out.stderr
    return out


# A jet whose values are not numbers: the tabular plugin fails it.
MALFORMED_CODE = "plugin_error"


def submit_malformed(tmp_path: Path, state: Path, n: int) -> None:
    bad = tmp_path / "malformed.json"
    bad.write_text('{"keys": ["jet_pt"], "values": "not numbers"}\n')
    out = submit(state, n, bad)
    assert MALFORMED_CODE in out.stdout + out.stderr, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])


def check_failures_and_latency(row: list[str], model: dict, failed: int) -> None:
    """The row's failures by code (as the JSON has them) and p50 <= p90 <= p99, all positive."""
    assert model["failures"] == {MALFORMED_CODE: failed}, model
    assert row[8] == f"{MALFORMED_CODE} {failed}", row
    p50, p90, p99 = (float(c) for c in row[9:12])
    assert 0 < p50 <= p90 <= p99, row
    assert 0 < model["latency_p50_us"] <= model["latency_p90_us"] <= model["latency_p99_us"], model


def test_the_status_page_of_a_host_shows_its_models(tmp_path):
    for path in (HOST_BIN, CLI, REPOSITORY):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/setup")
    http = free_port()
    procs: list = []
    try:
        state = tmp_path / "host"
        state.mkdir()
        log = tmp_path / "host.log"
        repo = tmp_path / "repo"
        shutil.copytree(REPOSITORY, repo)
        with open(log, "wb") as f:
            procs.append(subprocess.Popen([str(HOST_BIN), "serve", "--repository", str(repo), "--listen", "127.0.0.1:0",
                                           "--state-dir", str(state), "--http-listen", f"127.0.0.1:{http}",
                                           "--canary-share", "0.25", "--canary-items", "1000"],
                                          stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        wait_for(state / "fingerprint", procs[-1], "host", log)
        submit(state, 5)
        submit_malformed(tmp_path, state, 3)
        # A newer tabular goes on trial (a quarter of the requests, 1,000 items to pass).
        shutil.copytree(repo / "tabular" / "1", repo / "tabular" / "2")
        manifest = repo / "tabular" / "2" / "manifest.toml"
        manifest.write_text(manifest.read_text().replace("version = 1", "version = 2"))
        reload = subprocess.run([str(CLI), "--host", (state / "listening").read_text().strip(), "--fingerprint",
                                 (state / "fingerprint").read_text().strip(), "reload"], capture_output=True, text=True, timeout=60)
        assert reload.returncode == 0, reload.stderr
        js = status_json(http)
        assert js["role"] == "host" and js["workers"] == []
        page = render(f"http://127.0.0.1:{http}/status", tmp_path / "host.png")
        assert page.text["role"].strip() == "— host"
        served = {(m["name"], m["version"]) for m in js["models"]}
        assert set(page.rows) == {f"{n}/{v}" for n, v in served}
        tabular = page.rows["tabular/1"]
        assert tabular[:3] == ["tabular", "1", "default"] and tabular[5:7] == ["5", "3"], tabular
        check_failures_and_latency(tabular, next(m for m in js["models"] if (m["name"], m["version"]) == ("tabular", 1)), 3)
        assert page.rows["tabular/2"][8:12] == ["–"] * 4, "no item on the canary yet"
        assert page.rows["tabular/2"][2] == "canary 25 %: 0/1000 items, 0 failed", page.rows["tabular/2"]
        assert "fleet" in page.hidden, "a host has no workers table"
    finally:
        stop(procs)


def test_the_status_page_of_a_gateway_shows_the_fleet_and_each_worker(tmp_path):
    for path in (HOST_BIN, GATEWAY_BIN, CLI, REPOSITORY, NATS_SERVER):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/setup")
    http = free_port()
    procs: list = []
    try:
        url = start_engine(tmp_path, procs)
        for w in ("w1", "w2"):
            (tmp_path / w).mkdir()
            log = tmp_path / f"{w}.log"
            with open(log, "wb") as f:
                procs.append(subprocess.Popen([str(HOST_BIN), "worker", "--nats", url, "--heartbeat-ms", "200", "--repository",
                                               str(REPOSITORY), "--threads", "1", "--capacity", "32", "--state-dir", str(tmp_path / w)],
                                              stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            wait_for(tmp_path / w / "worker", procs[-1], w, log)
        state = tmp_path / "gateway"
        state.mkdir()
        log = tmp_path / "gateway.log"
        with open(log, "wb") as f:
            procs.append(subprocess.Popen([str(GATEWAY_BIN), "--nats", url, "--heartbeat-ms", "200", "--listen", "127.0.0.1:0",
                                           "--state-dir", str(state), "--http-listen", f"127.0.0.1:{http}"],
                                          stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        wait_for(state / "fingerprint", procs[-1], "gateway", log)
        deadline_polls = 100
        while len(status_json(http)["workers"]) < 2:
            deadline_polls -= 1
            assert deadline_polls > 0, "the gateway never saw both workers"
            subprocess.run(["sleep", "0.1"], check=True)
        submit(state, 8)
        submit_malformed(tmp_path, state, 2)
        js = status_json(http)
        page = render(f"http://127.0.0.1:{http}/status", tmp_path / "gateway.png")
        assert page.text["role"].strip() == "— gateway"
        assert "fleet" not in page.hidden
        ids = {(tmp_path / w / "worker-id").read_text().strip() for w in ("w1", "w2")}
        assert set(k for k in page.rows if k.startswith("w-")) == ids
        for wid in ids:
            row = page.rows[wid]
            held = row[4].split(", ")
            assert row[3] == "cpu" and "tabular/1" in held and row[5] == str(32 * len(held)), "--capacity 32 per version held"
        tabular = page.rows["tabular/1"]
        assert tabular[2] == "default" and tabular[5] == "8" and tabular[-1] == "2", tabular
        # The gateway's own count of the items it answered, by code, and their latency at the gateway.
        check_failures_and_latency(tabular, next(m for m in js["models"] if (m["name"], m["version"]) == ("tabular", 1)), 2)
        assert "histogram_quantile" in page.text["latency-note"], "the page says how the percentiles are made"
        shown = {(k.split("/")[0], int(k.split("/")[1])) for k in page.rows if k not in ids}
        assert shown == {(m["name"], m["version"]) for m in js["models"]}
    finally:
        stop(procs)


def test_the_status_json_needs_the_predict_role(tmp_path):
    http = free_port()
    procs: list = []
    try:
        state = tmp_path / "host"
        state.mkdir()
        access = tmp_path / "access.toml"
        hashed = subprocess.run([str(HOST_BIN), "hash-token"], input="reader-token", capture_output=True, text=True, check=True).stdout
        access.write_text(f'[[token]]\nrole = "predict"\nsha256 = "{hashed.split()[-1]}"\nname = "reader"\n')
        log = tmp_path / "host.log"
        with open(log, "wb") as f:
            procs.append(subprocess.Popen([str(HOST_BIN), "serve", "--repository", str(REPOSITORY), "--listen", "127.0.0.1:0",
                                           "--state-dir", str(state), "--http-listen", f"127.0.0.1:{http}", "--access", str(access)],
                                          stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        wait_for(state / "fingerprint", procs[-1], "host", log)
        with pytest.raises(urllib.error.HTTPError) as e:
            status_json(http)
        assert e.value.code == 403
        request = urllib.request.Request(f"http://127.0.0.1:{http}/v2/tensorgate/status", headers={"Authorization": "Bearer reader-token"})
        with urllib.request.urlopen(request, timeout=5) as r:
            assert json.load(r)["role"] == "host"
        # The page itself holds no data: served to anyone.
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/status", timeout=5) as r:
            assert r.headers["content-type"].startswith("text/html") and b"/v2/tensorgate/status" in r.read()
    finally:
        stop(procs)
