"""The presentation layer: figure functions (quick, small arguments), write_report and ``fluidllm paper``."""
from __future__ import annotations

import json
import math

import numpy as np

import pytest
from matplotlib.figure import Figure

from fluidllm import ModelError
from fluidllm.cli import main
from fluidllm.report import FIGURES, write_report
from fluidllm.report import figures as F


def _lines(ax) -> int:
    return len(ax.get_lines())


def test_batch_time_fits_vendored_only() -> None:
    fig = F.batch_time_fits(include_shared=False)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2                          # the data panel and its residuals
    assert _lines(fig.axes[0]) == 3                    # measured + two families
    n = fig.numbers
    assert n["profiles"][0]["path"].endswith("profile_llama-2-7b_a100.csv")
    assert "vendored profile only" in n["source"]
    assert n["min_r2"] > 0.97                          # the paper's R² > 0.97 claim


def test_batch_time_fits_missing_calibration_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FLUIDLLM_CALIBRATION_DIR", str(tmp_path / "absent"))
    assert F.calibration_dir() is None
    profs, why = F.calibration_profiles()
    assert len(profs) == 1 and "not on this machine" in why


def test_capacity_region_vertex_c() -> None:
    fig = F.capacity_region()
    assert len(fig.axes) == 2
    n = fig.numbers
    assert n["mu_tokens_per_s"][512] == pytest.approx(512 / (11.28 + 4 * 35.47) * 1000, rel=1e-12)
    assert n["vertex_c_is_vertex"] and n["vertex_c_scale"] == pytest.approx(1.0, abs=1e-9)
    assert n["vertex_c_per_s"] == pytest.approx([29 / 46.75 * 1000, 99 / 46.75 * 1000])


def test_policy_trajectories_small() -> None:
    fig = F.policy_trajectories(policies=("fastertransformer", "sarathi"), fractions=(1.1,), replications=2,
                                horizon_s=20, verdicts=False)
    top, bot = fig.axes
    assert _lines(top) == 3 and _lines(bot) == 2       # two policies + the fluid line on the backlog panel
    runs = {r["policy"]: r for r in fig.numbers["runs"]}
    mu = 512 / (11.28 + 4 * 35.47) * 1000
    assert runs["sarathi"]["fluid_slope_tokens_per_s"] == pytest.approx(0.1 * mu, rel=1e-9)
    assert runs["fastertransformer"]["fluid_slope_tokens_per_s"] is None   # geometric lengths: no FT fluid
    assert runs["fastertransformer"]["final_backlog_tokens"] > runs["sarathi"]["final_backlog_tokens"]


def test_fluid_vs_scaled_small() -> None:
    fig = F.fluid_vs_scaled(ns=(1, 4), cases=(("sarathi", 0.0),), k=10)
    assert len(fig.axes) == 2
    assert _lines(fig.axes[0]) == 3                   # fluid + one path per n
    (c,) = fig.numbers["cases"]
    assert c["sup_distance"][1] < c["sup_distance"][0]
    assert c["sup_distance"][1] <= 512 * (3 + 100 + 1) / 4     # the deterministic C/n bound (tests/test_fluid.py)


def test_boundary_vs_budget_from_given_tables() -> None:
    import fluidllm as fl

    model = fl.load_model(F.FIG1_MODEL)
    tabs = {b: fl.policy_capacity_table(model.with_engine("a100", token_budget=b), ("fastertransformer", "vllm"),
                                        replications=2, horizon_s=10, boundary_points=2, boundary_rounds=1,
                                        simulate=False, precision=0.2) for b in (128, 1024)}
    fig = F.boundary_vs_budget(budgets=(128, 1024), tables=tabs)
    rows = fig.numbers["rows"]
    assert [r["b_max"] for r in rows] == [128, 1024]
    assert rows[0]["ft_rate_per_s"] == 0.0             # 129-token prompts never fit 128 (whole prompts)
    wc = 1024 / (11.28 + 8 * 35.47) * 1000 / (129 + 112)
    assert rows[1]["wc_rate_per_s"] == pytest.approx(wc, rel=1e-6)
    assert 0 < rows[1]["ft_rate_per_s"] < wc


def test_write_report_small_selection(tmp_path) -> None:
    rep = write_report(tmp_path / "r", quick=True, workers=1, figures=["capacity_region"],
                       only_checks=["check_thm10_vertex_c", "check_paper_fit_numbers"], policy_table=False)
    assert rep.ok and rep.counts["PASS"] == 2 and rep.counts["FAIL"] == 0
    text = rep.readme.read_text()
    assert text.index("## Verdicts") < text.index("## " + FIGURES["capacity_region"]) < text.index("## Reproducibility")
    assert "`check_thm10_vertex_c`" in text and "capacity_region.png" in text
    assert (tmp_path / "r" / "capacity_region.png").stat().st_size > 1000
    d = rep.to_dict()
    json.dumps(d, allow_nan=False)
    assert set(d["files"]) == {str(tmp_path / "r" / "README.md"), str(tmp_path / "r" / "capacity_region.png")}


def test_write_report_policy_table_quick_in_pool(tmp_path) -> None:
    rep = write_report(tmp_path, quick=True, workers=2, figures=[], only_checks=[], policy_table=True)
    assert rep.ok, rep.errors
    names = [r["name"] for r in rep.table["rows"]]
    assert names == ["fastertransformer", "fastertransformer-static", "vllm", "orca", "sarathi"]
    wc = rep.table["work_conserving_max_scale"]
    assert wc == pytest.approx(1.3337493519853, rel=1e-9)
    assert "| sarathi | yes |" in rep.readme.read_text()


def test_write_report_bad_arguments(tmp_path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ModelError, match="it is a file"):
        write_report(f)
    with pytest.raises(ModelError, match="figures"):
        write_report(tmp_path, figures=["nope"])
    with pytest.raises(ModelError, match="only_checks"):
        write_report(tmp_path, only_checks=["check_nope"])
    with pytest.raises(ModelError, match="workers"):
        write_report(tmp_path, workers=0)


def test_cli_paper_json_tiny(tmp_path, capsys) -> None:
    rc = main(["paper", "--out", str(tmp_path / "o"), "--quick", "--json", "--figures", "none",
               "--checks", "check_staircase_rate_bound", "--no-policy-table", "--workers", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    d = json.loads(out)
    assert d["ok"] and d["counts"] == {"PASS": 1, "FAIL": 0, "PENDING": 0}
    assert d["files"] == [str(tmp_path / "o" / "README.md")]
    assert math.isfinite(d["wall_s"])


def test_cli_paper_out_is_a_file(tmp_path, capsys) -> None:
    f = tmp_path / "taken"
    f.write_text("x")
    rc = main(["paper", "--out", str(f), "--json"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: --out = ") and "it is a file" in err and "Traceback" not in err


def test_cli_paper_unknown_figure(tmp_path, capsys) -> None:
    rc = main(["paper", "--out", str(tmp_path), "--figures", "nope"])
    assert rc == 2 and "figures" in capsys.readouterr().err


def test_network_figures_numbers_against_theory(tmp_path) -> None:
    """The network section: the LP region of Rybko-Stolyar has its closed-form vertices, the virtual station
    1.6105 > 1, and the three policies' fluid verdicts are exit DIVERGES, entry and max-pressure DRAINS."""
    from fluidllm.report.paper import write_report

    rep = write_report(tmp_path / "r", quick=True, workers=1, figures=["network_capacity", "rybko_stolyar_policies"],
                       only_checks=[], policy_table=False)
    assert rep.ok, rep.errors
    n = rep.numbers["network_capacity"]
    mu = 768_000.0
    assert np.allclose(n["rs_vertices_per_s"], [[0, 0], [mu / 544, 0], [mu / 608, mu / 608], [0, mu / 544]])
    assert n["rs_max_scale"] == pytest.approx(1 / 0.9) and n["rs_virtual_station"] == pytest.approx(2 * 544 * 0.9 / 608)
    runs = {r["label"]: r for r in rep.numbers["rybko_stolyar_policies"]["runs"]}
    assert runs["priority to exiting classes"]["fluid_verdict"] == "DIVERGES"
    assert runs["priority to entering classes"]["fluid_verdict"] == "DRAINS"
    assert runs["max-pressure"]["fluid_verdict"] == "DRAINS"
    text = rep.readme.read_text()
    assert "Rybko–Stolyar" in text and (tmp_path / "r" / "rybko_stolyar_policies.png").is_file()
