"""clipflow-serve end to end in a real headless browser: the console script serves a tiny
checkpoint on a free loopback port, chromium (driven by playwright, Debian's binary: nothing
is downloaded) uploads one real and one fake image of the synthetic generator through the
page, the two verdicts are read from the DOM and equal clipflow-detect's, and the server stops
on SIGTERM leaving no upload behind. Every step is bounded in time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from browser import FLAGS, require_chromium
from PIL import Image

from clipflow.data.synthetic import fake_image, natural_image
from clipflow.detect import Detector
from clipflow.serve.page import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
BIN = Path(sys.executable).parent
START_S, STEP_MS, STOP_S = 120, 60_000, 30


def _wait_for_address(proc: subprocess.Popen, lines: list[str], stderr: Path) -> str:
    """The address clipflow-serve prints once it answers (stdout read in a thread)."""

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        for line in lines:
            if "open http" in line:
                return line.split("open ", 1)[1].split()[0]
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"clipflow-serve did not start: {''.join(lines)}{stderr.read_text()[-2000:]}")


def test_page_answers_two_uploads(trained_run: Path, tmp_path: Path):
    pytest.importorskip("gradio", reason="the clipflow[serve] extra is not installed")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    browser_path = require_chromium()
    rng = np.random.default_rng(0)
    images = {"real.png": natural_image(rng, 96), "fake.png": fake_image(rng, 96)}
    for name, pixels in images.items():
        Image.fromarray(pixels).save(tmp_path / name)
    server_tmp = tmp_path / "server-tmp"  # the server's TMPDIR: its uploads land under it
    server_tmp.mkdir()
    port, stderr = free_port("127.0.0.1"), tmp_path / "stderr.txt"
    err_file = stderr.open("w")
    proc = subprocess.Popen(
        [str(BIN / "clipflow-serve"), f"ckpt={trained_run}", f"port={port}", "device=cpu"],
        stdout=subprocess.PIPE,
        stderr=err_file,  # a file: a pipe nobody reads could fill and stall the server
        text=True,
        env={**os.environ, "TMPDIR": str(server_tmp), "HF_HUB_OFFLINE": "1"},
    )
    lines: list[str] = []
    try:
        url = _wait_for_address(proc, lines, stderr)
        assert url.startswith(f"http://127.0.0.1:{port}")
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=browser_path, args=[f for f in FLAGS if f != "--headless"]
            )
            try:
                page = browser.new_page()
                page.set_default_timeout(STEP_MS)
                page.goto(url)
                assert "random weights" in page.inner_text("#clipflow-card")
                page.set_input_files(
                    "#clipflow-upload input[type=file]", [str(tmp_path / n) for n in images]
                )
                rows = page.locator("#clipflow-verdicts tr[data-file]")
                rows.nth(1).wait_for()
                seen = {
                    rows.nth(i).get_attribute("data-file"): (
                        rows.nth(i).get_attribute("data-decision"),
                        rows.nth(i).locator("td").nth(1).inner_text(),
                    )
                    for i in range(rows.count())
                }
            finally:
                browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("clipflow-serve did not stop within 30 s of SIGTERM")
        finally:
            err_file.close()
    det = Detector.from_checkpoint(trained_run, device="cpu")
    want = det.score_files([tmp_path / n for n in images])
    assert seen == {n: (r.decision, f"{r.score:.4f}") for n, r in zip(images, want)}
    assert code == 0
    left = [p.relative_to(server_tmp) for p in server_tmp.rglob("*") if p.is_file()]
    assert left == [] and not list(server_tmp.glob("clipflow-serve-*"))  # no upload was kept
    assert "stopped; uploads deleted" in stderr.read_text()
