"""The report as a user sees it: headless Chromium (Debian's `chromium`) opens the page of a
small study, renders it to PNG, and the page must load every image, log nothing to the console
and fit the window's width. CI installs Chromium; where it is missing the test fails in CI and
is skipped elsewhere, saying so."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import study_dir  # noqa: F401 - the synthetic study the report tests use

from codepeft.report import write_report

WIDTH, HEIGHT = 1400, 3000
PROBE = """<script>
window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute("src"));
  const wide = [...document.querySelectorAll("img, table")]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.getAttribute("src") || e.tagName);
  document.title = "CHECK " + JSON.stringify({images: document.images.length, broken, wide,
    overflow: document.documentElement.scrollWidth - window.innerWidth});
});
</script>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must test the report in a browser: install Debian's chromium (.ci/run does)")
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    return found


def render(page: Path, png: Path) -> tuple[dict, list[str]]:
    """Open `page` in headless Chromium: (what the probe saw, console messages); writes `png`."""
    browser = _chromium()
    checked = page.with_name("browser-check.html")  # beside the page, so its relative image paths hold
    checked.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={WIDTH},{HEIGHT}",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=120)
    subprocess.run([*flags, f"--screenshot={png}", page.as_uri()], capture_output=True, timeout=120, check=True)
    checked.unlink()
    title = re.search(r"<title>CHECK (.*?)</title>", dom.stdout)
    assert title, f"the page did not finish loading: {dom.stderr[-2000:]}"
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(title.group(1).replace("&quot;", '"')), console


def test_the_report_renders_in_a_browser_with_every_image_and_no_error(study_dir, tmp_path):  # noqa: F811
    page = write_report(study_dir)
    seen, console = render(page, tmp_path / "report.png")
    assert seen["images"] >= 3, seen  # the figures are on the page
    assert seen["broken"] == [], seen
    assert console == [], console
    assert seen["overflow"] <= 0 and seen["wide"] == [], seen  # nothing wider than the window
    png = (tmp_path / "report.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 50_000  # a rendered page, not a blank one


def test_the_check_sees_a_broken_image_and_a_console_error(tmp_path):
    page = tmp_path / "index.html"
    page.write_text('<html><head><title>t</title></head><body><img src="figures/gone.png">'
                    '<script>console.error("boom")</script></body></html>')  # fmt: skip
    seen, console = render(page, tmp_path / "p.png")
    assert seen["broken"] == ["figures/gone.png"]
    assert any('"boom"' in line for line in console)
