"""The HTML report: self-contained, escaped, robust to missing parts; loaded in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import build_world, catalogue, make_params, run_report, write_main_run
from PIL import Image



class _Refs(HTMLParser):
    """Collects every src/href (and a few element counts) of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: dict[str, int] = {}
        self.classes: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data") and value is not None:
                self.refs.append((tag, name, value))
            if name == "class" and value:
                for c in value.split():
                    self.classes[c] = self.classes.get(c, 0) + 1


def _parse(html_text: str) -> _Refs:
    parser = _Refs()
    parser.feed(html_text)
    return parser


def _assert_self_contained(html_text: str, folder: Path) -> _Refs:
    parsed = _parse(html_text)
    for tag, name, value in parsed.refs:
        local = (
            not value.startswith(("http:", "https:", "//", "file:"))
            and (folder / value.split("#")[0]).exists()
        )
        assert value.startswith(("data:", "#")) or local, (tag, name, value[:80])
    assert "<link" not in html_text and "@import" not in html_text and "url(" not in html_text
    return parsed


def test_report_without_runs_is_still_a_page(tmp_path: Path) -> None:
    """Nothing evaluated yet: the report says so per scenario instead of failing."""
    params = make_params(tmp_path)
    build_world(tmp_path / "prepared")
    index = run_report(params, tmp_path)
    text = index.read_text()
    _assert_self_contained(text, index.parent)
    assert "No evaluation of the main run found" in text and "No ablation results" in text
    assert json.loads(catalogue(params, tmp_path).metrics("report").read_text()) == {"overall": {}}


def test_report_escapes_text_from_the_tables(tmp_path: Path, metric_models) -> None:
    import pandas as pd

    from pmg.io import write_table
    from pmg.stages import evaluate as evaluate_stage
    from pmg.schemas import Keywords

    params = make_params(tmp_path)
    prepared = build_world(tmp_path / "prepared")
    write_main_run(prepared, params)
    keywords = pd.read_parquet(Path(params.keywords.out) / "clothing.parquet")
    keywords.loc[0, "preference_keywords"] = json.dumps(["<script>alert(1)</script>", "a & b"])
    write_table(keywords, Path(params.keywords.out) / "clothing.parquet", Keywords)
    where = catalogue(params, tmp_path)
    evaluate_stage.run(params, "clothing", catalogue=where, metric_models=metric_models, log=lambda _: None)
    text = run_report(params, tmp_path).read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "a &amp; b" in text
    parsed = _assert_self_contained(text, Path(params.report.out))
    assert parsed.classes["gallery-pair"] == 2  # report.gallery_pairs
    assert parsed.classes["chosen"] == 2  # one chosen candidate per pair
    # history (3 + 2) + targets 2 + candidates 3 per pair; every image embedded
    assert parsed.tags["img"] == 5 + 2 + 6


@pytest.mark.slow  # the session's tiny pipeline run
def test_report_of_a_pipeline_run_has_every_part(pipeline_run) -> None:
    index = run_report(pipeline_run.params, pipeline_run.root)
    text = index.read_text()
    parsed = _assert_self_contained(text, index.parent)
    assert "paper Table 2" in text and "paper Table 3" in text
    assert "Latent preference recovered" in text and "ablation: target_image" in text
    assert parsed.tags.get("svg", 0) >= 1 and parsed.tags.get("polyline", 0) >= 3
    assert parsed.classes["gallery-pair"] == 2
    summary = json.loads(catalogue(pipeline_run.params, pipeline_run.root).metrics("report").read_text())
    assert summary["clothing"]["lpips_history"] == pipeline_run.metrics["lpips_history"]


# ------------------------------------------------------------------ browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1200,1600",
]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=64 * 2**20, open_timeout=60)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == mine:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        for message in self.events:
            if message.get("method") == event:
                return message
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(message)
            if message.get("method") == event:
                return message

    def close(self) -> None:
        self.ws.close()


def _devtools_page(user_data: Path, process: subprocess.Popen, timeout: float = 90) -> str:
    port_file = user_data / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while not port_file.is_file() or not port_file.read_text().strip():
        if process.poll() is not None:
            raise RuntimeError(
                f"chromium exited with {process.returncode}: {process.stderr.read()[-2000:]!r}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError("chromium did not open its DevTools port")
        time.sleep(0.2)
    port = int(port_file.read_text().split()[0])
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            pages = [t for t in json.loads(answer.read()) if t.get("type") == "page"]
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        if time.monotonic() > deadline:
            raise TimeoutError("chromium opened no page")
        time.sleep(0.2)


def _distinct_colours(png: bytes) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    return len(np.unique(pixels, axis=0))


@pytest.mark.slow  # starts a headless Chromium, after the session's tiny pipeline run
def test_report_loads_in_headless_chromium_without_failed_requests(pipeline_run, tmp_path: Path) -> None:
    binary = _chromium()
    if binary is None:
        pytest.skip("chromium is not installed (Debian package `chromium`; `make system-deps` installs it)")
    index = run_report(pipeline_run.params, pipeline_run.root)
    user_data = tmp_path / "chromium-profile"
    user_data.mkdir()
    process = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        tools = DevTools(_devtools_page(user_data, process))
        tools.call("Network.enable")
        tools.call("Page.enable")
        tools.call(
            "Emulation.setDeviceMetricsOverride", width=1200, height=1600, deviceScaleFactor=1, mobile=False
        )
        tools.call("Page.navigate", url=index.resolve().as_uri())
        tools.wait_for("Page.loadEventFired", timeout=120)
        requested = [
            e["params"]["request"]["url"]
            for e in tools.events
            if e.get("method") == "Network.requestWillBeSent"
        ]
        failed = [e["params"] for e in tools.events if e.get("method") == "Network.loadingFailed"]
        images = tools.call(
            "Runtime.evaluate",
            expression="[...document.images].filter(i => i.complete && i.naturalWidth > 0).length + '/' + document.images.length",
            returnByValue=True,
        )
        tools.call("Runtime.evaluate", expression="document.querySelector('.gallery-pair').scrollIntoView()")
        shot = base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"])
        tools.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    assert failed == []
    assert requested and all(
        url.startswith("data:") or url == index.resolve().as_uri() for url in requested
    ), requested[:5]
    loaded, total = map(int, images["result"]["value"].split("/"))
    assert total > 10 and loaded == total  # every embedded image decoded
    (tmp_path / "report-gallery.png").write_bytes(shot)
    assert Image.open(io.BytesIO(shot)).size == (1200, 1600)
    assert _distinct_colours(shot) > 500  # garments, generated images, text: not a blank page
