"""report.html renders in headless Chromium: every figure decodes and the results table is there."""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stabletune.analysis.frames import ResultsFrames
from stabletune.analysis.report import write_report

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]

# Appended to a copy of the report (never to the product): after load, write what the page shows into the DOM.
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}));
  const t = document.getElementById('summary-last');
  const out = {imgs, table: !!t, rows: t ? t.tBodies[0].rows.length : 0,
               header: t ? [...t.tHead.rows[0].cells].map(c => c.textContent) : [],
               external: [...document.querySelectorAll('[src],[href]')]
                 .map(e => e.getAttribute('src') || e.getAttribute('href')).filter(u => !u.startsWith('data:'))};
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = 'PROBE' + JSON.stringify(out) + 'EBORP';
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def _frames() -> ResultsFrames:
    rng = np.random.default_rng(0)
    rows = [dict(method=meth, task=task, seed=s, checkpoint="last", split="test", metric=metric,
                 value=np.nan if (meth, s) == ("not_debiased", 0) and task == "STS-B" else rng.normal(mu, 0.02))
            for meth, mu in (("standard_debiased", 0.7), ("not_debiased", 0.6))
            for task, metric in (("RTE", "acc"), ("STS-B", "spearman")) for s in range(8)]
    return ResultsFrames(metrics=pd.DataFrame(rows), meta={"title": "Browser check"})


def test_report_html_renders_in_chromium(tmp_path):
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("headless Chromium is required in CI (apt-get install -y chromium) but was not found")
        pytest.skip("headless Chromium not found (install: apt-get install -y chromium); CI is not set")
    paths = write_report(_frames(), tmp_path / "report", n_boot=50)
    html = paths["html"].read_text(encoding="utf-8")
    n_figures = sum(k.startswith("figure:") for k in paths)
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    profile = tmp_path / "profile"

    def chrome(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *extra], capture_output=True,
                              text=True, timeout=120)

    res = chrome("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">PROBE(.*?)EBORP</pre>', res.stdout, re.S)
    assert found, f"no probe output (rc={res.returncode}): {res.stderr[-2000:]}"
    out = json.loads(html_lib.unescape(found.group(1)))
    assert len(out["imgs"]) == n_figures >= 3
    assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in out["imgs"]), out["imgs"]
    assert out["table"] and out["rows"] == 2 and "RTE acc" in out["header"]
    assert out["external"] == []

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report_browser.png"
    shot.unlink(missing_ok=True)
    chrome("--window-size=1400,2400", "--hide-scrollbars", f"--screenshot={shot}", paths["html"].as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000, "Chromium wrote no screenshot"
