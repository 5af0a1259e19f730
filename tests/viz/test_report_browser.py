"""The HTML report opened in headless Chromium, as a person would open it (desktop and phone).

Chromium comes from Debian's packages (``.ci/run`` installs it); without it the tests skip
locally and fail in CI (``CI`` set), so the check cannot silently vanish there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kp3d.viz import html

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

# Collects errors from the first script on (page errors and console.error calls).
ERRORS_FIRST = (
    "<script>window.__errors=[];addEventListener('error',e=>__errors.push(String(e.message)));"
    "const __ce=console.error;console.error=(...a)=>{__errors.push(a.join(' '));__ce(...a)};"
    "</script>"
)
# After load: how many pixels each canvas has drawn, its touch-action, and whether the page fits
# the window's width (no sideways scrolling on a phone).
PROBE = """<script>addEventListener('load', () => {
  const canvases = [...document.querySelectorAll('canvas')].map(c => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
    return {drawn: n, touch: getComputedStyle(c).touchAction};
  });
  const out = document.createElement('pre'); out.id = 'kp3d-probe';
  out.textContent = JSON.stringify({errors: __errors, canvases,
    scrollWidth: document.documentElement.scrollWidth, innerWidth: innerWidth});
  document.body.appendChild(out);
});</script>"""


def _chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium not installed (CI installs it)")
    return CHROMIUM


def _open(page: Path, tmp: Path, *, width: int, height: int) -> tuple[dict, np.ndarray]:
    """The probe's findings and a screenshot of ``page`` in a ``width`` x ``height`` window."""
    chromium = _chromium()
    text = page.read_text(encoding="utf-8")
    probed = tmp / f"probed-{width}.html"
    probed.write_text(
        text.replace("<head>", "<head>" + ERRORS_FIRST, 1).replace("</body>", PROBE + "</body>"),
        encoding="utf-8",
    )
    common = [*FLAGS, f"--window-size={width},{height}", f"--user-data-dir={tmp / 'profile'}"]
    dom = subprocess.run(
        [chromium, *common, "--virtual-time-budget=3000", "--dump-dom", probed.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = re.search(r'<pre id="kp3d-probe">(.*?)</pre>', dom, re.DOTALL)
    assert found, f"the probe did not run; Chromium printed: {dom[:500]!r}"
    shot = tmp / f"shot-{width}.png"
    subprocess.run(
        [chromium, *common, f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    doc = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    return doc, np.asarray(Image.open(shot).convert("L"))


def _page(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(6, 3))
    w = np.abs(rng.normal(size=(6, 6)))
    w = w + w.T
    edges = html.spanning_edges(w)
    body = (
        html.table([{"metric": "nme", "value": 0.1, "protocol": "a long protocol " * 12}])
        + html.line_chart({"loss": ([0, 1, 2, 3], [1.0, 0.5, 0.3, 0.2])}, title="loss")
        + "<div class='grid'>"
        + "".join("<figure>" + html.viewer(pts, edges, uid=f"v{i}") + "</figure>" for i in range(3))
        + html.skeleton_svg(pts[:, :2], w)
        + "</div>"
    )
    path = tmp / "page.html"
    path.write_text(html.page("report", body), encoding="utf-8")
    return path


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)], ids=["desktop", "phone"])
def test_the_page_draws_without_errors_and_fits_the_window(
    tmp_path: Path, width: int, height: int
) -> None:
    doc, shot = _open(_page(tmp_path), tmp_path, width=width, height=height)
    assert doc["errors"] == []
    assert len(doc["canvases"]) == 3
    for canvas in doc["canvases"]:
        assert canvas["drawn"] > 50  # points, edges and index labels were painted
        assert canvas["touch"] == "none"  # a finger drag rotates instead of scrolling
    assert doc["scrollWidth"] <= doc["innerWidth"], "the page scrolls sideways"
    assert shot.std() > 5 and (shot < 128).mean() > 0.001  # not a blank screenshot


def test_a_script_error_would_be_caught(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(html.page("broken", "<script>noSuchFunction();</script>"), encoding="utf-8")
    doc, _ = _open(page, tmp_path, width=800, height=600)
    assert any("noSuchFunction" in e for e in doc["errors"])


def test_a_real_report_opens_and_draws(tiny_run: Path, tmp_path: Path) -> None:
    from kp3d.cli import main

    page = tmp_path / "report.html"
    assert (
        main(["report", "--run", str(tiny_run / "run"), "--out", str(page), "--samples", "3"]) == 0
    )
    doc, shot = _open(page, tmp_path, width=390, height=844)
    assert doc["errors"] == []
    assert len(doc["canvases"]) == 4  # the canonical shape and each sample's 3D keypoints
    assert all(c["drawn"] > 50 and c["touch"] == "none" for c in doc["canvases"])
    assert doc["scrollWidth"] <= doc["innerWidth"], "the report scrolls sideways on a phone"
    assert shot.std() > 5
