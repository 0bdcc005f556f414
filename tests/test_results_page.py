"""fluidllm report RESULTS: the HTML page of a real (small) sweep, its boundary loads, its errors, and the
page opened in headless Chromium, which must decode every figure."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import fluidllm as fl
from fluidllm.cli import main
from fluidllm.errors import ModelError
from fluidllm.report.results_page import boundary_loads, render_results

ROOT = Path(__file__).resolve().parents[1]
SWEEP = f"""
model = "{(ROOT / 'examples' / 'paper_codellama_b512.toml').as_posix()}"
analyses = ["capacity", "fluid"]
seed = 1
[grid]
"engines.a100.policy" = ["sarathi", "orca"]
load = [0.8, 1.2, 1.4, 1.6]
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sweep")
    (d / "s.toml").write_text(SWEEP)
    fl.run_sweep(fl.load_sweep(d / "s.toml"), results=d / "s.results", workers=1)
    return d / "s.results"


def test_page_and_boundary_against_the_lp(results: Path, tmp_path: Path) -> None:
    page = render_results(results, tmp_path / "report")
    html = Path(page.html).read_text()
    assert page.figures and all(Path(p).stat().st_size > 0 for p in page.figures.values())
    assert html.count("data:image/png;base64,") >= len(page.figures)
    cap = fl.capacity(fl.load_model(ROOT / "examples" / "paper_codellama_b512.toml")).max_scale   # 1.334
    for b in boundary_loads(fl.load_results(results)):
        # fluid DRAINS below capacity, DIVERGES above: the fluid bracket holds the LP boundary load
        lo, hi = b["fluid"]["lo"], b["fluid"]["hi"]
        assert lo is not None and hi is not None and lo <= cap <= hi
    json.dumps(page.to_dict(), allow_nan=False)


def test_cli_json_and_empty_folder(results: Path, tmp_path: Path, capsys) -> None:
    assert main(["report", str(results), "--out", str(tmp_path / "r"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"html", "figures", "points"} <= set(out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="RESULTS"):
        render_results(tmp_path / "empty", tmp_path / "x")


def test_chromium_renders_every_figure(results: Path, tmp_path: Path) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "the browser test needs Chromium: apt-get install -y chromium (make test installs it)"
    page = render_results(results, tmp_path / "report")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    probe = tmp_path / "report" / "probe.html"
    # the page inside an iframe-free copy with a script that lists the decoded images into the DOM
    html = Path(page.html).read_text()
    script = ("<script>window.addEventListener('load',()=>{const ok=[...document.images]"
              ".filter(i=>i.complete&&i.naturalWidth>0).length;const p=document.createElement('pre');"
              "p.id='probe';p.textContent='decoded='+ok+' of '+document.images.length;"
              "document.body.appendChild(p);});</script>")
    probe.write_text(html.replace("</body>", script + "</body>"))
    dom = subprocess.run([exe, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=60).stdout
    n = len(page.figures)
    assert n > 0 and f"decoded={n} of " in dom, dom[-500:]   # every listed figure decoded with a size
    shot = tmp_path / "shot.png"
    subprocess.run([exe, *flags, f"--screenshot={shot}", "--window-size=1200,900", Path(page.html).as_uri()],
                   capture_output=True, text=True, timeout=60)
    assert shot.exists() and shot.stat().st_size > 0
