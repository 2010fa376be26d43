"""A real headless browser for the tests of pages people look at (report.html).

Debian's ``chromium`` (``apt-get install chromium``; .ci/run installs it when absent) opens a
file, runs it, and prints the DOM it built (``--dump-dom``) or saves a screenshot. A test that
needs it calls :func:`require_chromium`, which skips with the reason only where no chromium
can be found. Every run is bounded by a timeout and uses a throw-away profile, no network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root in CI containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
TIMEOUT_S = 90

# Appended to a copy of a page: once it has loaded, it writes what a reader would see as JSON
# into the page, so that --dump-dom carries it out (the page itself has no script).
PROBE = """<script>
window.addEventListener("load", () => {
  const seen = (el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const sets = [...document.querySelectorAll("section.set")].map((s) => ({
    id: s.id,
    title: s.querySelector("h3") ? s.querySelector("h3").textContent : "",
    svgs: [...s.querySelectorAll("svg")].filter(seen).length,
    images: [...s.querySelectorAll("img")].length,
    decoded: [...s.querySelectorAll("img")].filter((i) => i.complete && i.naturalWidth > 0).length,
    placeholders: s.querySelectorAll(".missing").length,
  }));
  const out = {
    title: document.title,
    rows: [...document.querySelectorAll("table.results tbody tr.set")].map(
      (tr) => [...tr.cells].map((c) => c.textContent)),
    headers: [...document.querySelectorAll("table.results thead th")].map((th) => th.textContent),
    sets: sets,
    figures: [...document.querySelectorAll("h2")].map((h) => h.textContent),
    svgs: [...document.querySelectorAll("svg")].filter(seen).length,
    scripts_loaded: performance.getEntriesByType("resource").map((r) => r.name)
      .filter((n) => !n.startsWith("data:")),
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def find_chromium() -> str | None:
    """The path of a chromium-like browser, or None."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def require_chromium() -> str:
    """The browser's path; skips the calling test, saying why, when there is none."""
    found = find_chromium()
    if found is None:
        pytest.skip(
            "no chromium found (tried " + ", ".join(CANDIDATES) + "): install it with "
            "`apt-get install chromium` (.ci/run does when apt is available)"
        )
    return found


def _run(args: list[str], timeout: int = TIMEOUT_S) -> subprocess.CompletedProcess:
    browser = require_chromium()
    with tempfile.TemporaryDirectory(prefix="clipflow-chromium-") as profile:
        proc = subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "HOME": profile},
        )
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc


def dump_dom(page: Path, timeout: int = TIMEOUT_S) -> str:
    """The DOM chromium built from ``page`` (a file), after its load event and scripts."""
    proc = _run(
        ["--virtual-time-budget=10000", "--dump-dom", Path(page).resolve().as_uri()], timeout
    )
    return proc.stdout


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1280, 2000)) -> Path:
    """A PNG of the top ``size`` (width, height) of ``page`` as chromium draws it."""
    _run(
        [f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", Path(page).resolve().as_uri()]
    )
    assert Path(png).is_file() and Path(png).stat().st_size > 0, "chromium wrote no screenshot"
    return Path(png)


def what_a_reader_sees(page: Path, work: Path) -> dict:
    """Open a copy of ``page`` with :data:`PROBE` appended: the table's set rows, per set
    section its visible figures and decoded thumbnails, every resource fetched."""
    probe = Path(work) / f"probe-{Path(page).name}"
    text = Path(page).read_text(encoding="utf-8")
    probe.write_text(text.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
    dom = dump_dom(probe)
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert m, "the probe script did not run: " + dom[-500:]
    import html

    return json.loads(html.unescape(m.group(1)))
