"""report.html in headless Chromium at a desktop (1280x800) and a phone (390x844) width: every figure decodes, the
first desktop screen shows the summary sentence of every task and the whole main table, a phone never scrolls
sideways, and no external resource or absolute path is in the page. Screenshots go to test-artifacts/."""

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
         "--disable-dev-shm-usage", "--hide-scrollbars"]
SCREENS = {"desktop": (1280, 800), "phone": (390, 844)}

# Appended to a copy of the report (never to the product), shown in an iframe of exactly the screen's size (a
# headless window cannot be narrower than 500 px): after load, write what the page shows into the parent's DOM.
PROBE = """<script>
window.addEventListener('load', () => {
  const box = e => { const r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom}; };
  const imgs = [...document.images].map(i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}));
  const t = document.querySelector('table.main');
  const out = {imgs, w: window.innerWidth, h: window.innerHeight,
               scrollWidth: document.documentElement.scrollWidth,
               table: t ? {id: t.id, rows: t.tBodies[0].rows.length, box: box(t),
                           header: [...t.tHead.rows[0].cells].map(c => c.textContent)} : null,
               summary: [...document.querySelectorAll('ul.summary li')].map(li => ({id: li.id, box: box(li),
                                                                                   text: li.textContent})),
               external: [...document.querySelectorAll('[src],[href]')]
                 .map(e => e.getAttribute('src') || e.getAttribute('href')).filter(u => !u.startsWith('data:'))};
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = 'PROBE' + JSON.stringify(out) + 'EBORP';
  window.parent.document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def _frames(source: str) -> ResultsFrames:
    rng = np.random.default_rng(0)
    rows = [dict(method=meth, task=task, seed=s, checkpoint=ck, split="test", metric=metric,
                 value=np.nan if (meth, s) == ("not_debiased", 0) and task == "STS-B" else rng.normal(mu, 0.02))
            for meth, mu in (("standard_debiased", 0.7), ("not_debiased", 0.6))
            for task, metric in (("RTE", "acc"), ("STS-B", "spearman")) for s in range(8) for ck in ("best", "last")]
    return ResultsFrames(metrics=pd.DataFrame(rows), meta={"title": "Browser check", "source": source,
                                                           "baseline": "not_debiased",
                                                           "config": "name: browser\nseeds: 8\n" * 12})


def test_report_html_renders_in_chromium(tmp_path):
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("headless Chromium is required in CI (apt-get install -y chromium) but was not found")
        pytest.skip("headless Chromium not found (install: apt-get install -y chromium); CI is not set")
    paths = write_report(_frames(str(tmp_path / "studies" / "browser.db")), tmp_path / "report", n_boot=50)
    html = paths["html"].read_text(encoding="utf-8")
    assert str(tmp_path) not in html and str(tmp_path) not in paths["markdown"].read_text(encoding="utf-8")
    n_figures = sum(k.startswith("figure:") for k in paths)
    probed = html_lib.escape(html.replace("</body>", PROBE + "</body>"), quote=True)
    profile = tmp_path / "profile"

    def chrome(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *extra], capture_output=True,
                              text=True, timeout=120)

    seen = {}
    for screen, (w, h) in SCREENS.items():
        probe = tmp_path / f"probe_{screen}.html"  # srcdoc: the iframe shares the page's origin
        probe.write_text(f'<!DOCTYPE html><html><body style="margin:0"><iframe width="{w}" height="{h}" '
                         f'style="border:0;display:block" srcdoc="{probed}"></iframe></body></html>', encoding="utf-8")
        res = chrome("--window-size=1400,1000", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
        found = re.search(r'<pre id="probe">PROBE(.*?)EBORP</pre>', res.stdout, re.S)
        assert found, f"no probe output (rc={res.returncode}): {res.stderr[-2000:]}"
        out = seen[screen] = json.loads(html_lib.unescape(found.group(1)))
        assert (out["w"], out["h"]) == (w, h), out
        assert len(out["imgs"]) == n_figures >= 3
        assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in out["imgs"]), out["imgs"]
        assert out["external"] == []
        assert out["scrollWidth"] <= w, f"{screen}: the page scrolls sideways ({out['scrollWidth']} > {w} px)"

    desk = seen["desktop"]
    assert [s["id"] for s in desk["summary"]] == ["summary-rte", "summary-sts-b"]
    assert all("scores best" in s["text"] and "p " in s["text"] for s in desk["summary"])
    assert desk["table"]["id"] == "summary-best" and desk["table"]["rows"] == 2 and "RTE acc" in desk["table"]["header"]
    first_screen = SCREENS["desktop"][1]
    assert all(s["box"]["bottom"] <= first_screen for s in desk["summary"]), desk["summary"]
    assert desk["table"]["box"]["bottom"] <= first_screen, desk["table"]  # the whole main table, unscrolled

    ARTIFACTS.mkdir(exist_ok=True)
    for screen, (w, h) in {**SCREENS, "desktop-full": (1280, 3000)}.items():
        shot = ARTIFACTS / f"report_{screen}.png"
        shot.unlink(missing_ok=True)
        chrome(f"--window-size={w},{h}", f"--screenshot={shot}", paths["html"].as_uri())
        assert shot.is_file() and shot.stat().st_size > 10_000, f"Chromium wrote no {screen} screenshot"
