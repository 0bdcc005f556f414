"""Sweeps: expansion, validation, point keys, an in-process run into the store, resume, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import fluidllm
from fluidllm import ModelError
from fluidllm.sweep import OUT_COLUMNS, load_results, load_sweep, loads_sweep, run_sweep
from fluidllm.sweep import spec as S
from fluidllm.sweep.cli import run as cli_run
from fluidllm.sweep.store import stored_ids

MODEL = """
[engines.gpu0]
token_budget = 512
policy = "sarathi"
batch_time = { kind = "staircase", c_ms = 11.28, a_ms = 35.47, b0 = 128 }

[workloads.chat]
arrival = { kind = "poisson", rate_per_s = 10.4 }
prefill = { kind = "deterministic", value = 129 }
decode  = { kind = "geometric", mean = 112 }
"""

HEAD = 'model = "model.toml"\nanalyses = ["capacity"]\nreplications = 2\nhorizon_s = 5\nseed = 1\n'


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "model.toml").write_text(MODEL)
    return tmp_path


def sweep(folder: Path, body: str, head: str = HEAD, name: str = "s.toml"):
    p = folder / name
    p.write_text(head + body)
    return load_sweep(p)


# ----------------------------------------------------------------------------------- expansion
def test_grid_is_the_cartesian_product_in_order(folder):
    sp = sweep(folder, '[grid]\n"engines.gpu0.token_budget" = [128, 256, 512]\n'
                       '"engines.gpu0.policy" = ["sarathi", "vllm"]\nload = [0.5, 1]\n')
    assert sp.fields == ("engines.gpu0.token_budget", "engines.gpu0.policy", "load")
    assert len(sp.points) == 12
    assert [tuple(p.params.values()) for p in sp.points][:3] == [(128, "sarathi", 0.5), (128, "sarathi", 1.0),
                                                                 (128, "vllm", 0.5)]
    # ints mixed with floats become floats: one column type per field
    assert all(isinstance(p.params["load"], float) for p in sp.points)
    assert len({p.point_id for p in sp.points}) == 12 and len({p.seed for p in sp.points}) == 12


def test_lists_zip_and_multiply_the_grid(folder):
    sp = sweep(folder, '[grid]\nload = [0.5, 0.9]\n[lists]\n"engines.gpu0.token_budget" = [128, 256, 512]\n'
                       '"engines.gpu0.max_batch_requests" = [16, 32, 64]\n')
    assert len(sp.points) == 6
    pairs = {(p.params["engines.gpu0.token_budget"], p.params["engines.gpu0.max_batch_requests"]) for p in sp.points}
    assert pairs == {(128, 16), (256, 32), (512, 64)}


def test_random_draws_are_reproducible_in_range_and_per_field(folder):
    body = ('samples = 40\n[random]\n"engines.gpu0.token_budget" = { kind = "integers", low = 128, high = 130 }\n'
            'load = { kind = "uniform", low = 0.5, high = 0.9 }\n'
            '"engines.gpu0.policy" = { kind = "choice", values = ["sarathi", "orca"] }\n')
    a, b = sweep(folder, body), sweep(folder, body, name="t.toml")
    draws = [tuple(p.params.values()) for p in a.points]
    assert draws == [tuple(p.params.values()) for p in b.points]
    assert len(a.points) == 40  # continuous load: no two draws coincide
    assert {p.params["engines.gpu0.token_budget"] for p in a.points} == {128, 129, 130}  # inclusive high
    assert all(0.5 <= p.params["load"] < 0.9 for p in a.points)
    assert {p.params["engines.gpu0.policy"] for p in a.points} == {"sarathi", "orca"}
    # another sweep seed draws other values; dropping a field leaves the others' draws as they were
    c = sweep(folder, body, head=HEAD.replace("seed = 1", "seed = 2"), name="u.toml")
    assert [p.params["load"] for p in c.points] != [p.params["load"] for p in a.points]
    d = sweep(folder, body.replace('"engines.gpu0.policy" = { kind = "choice", values = ["sarathi", "orca"] }\n', ""),
              name="v.toml")
    assert [p.params["load"] for p in d.points] == [p.params["load"] for p in a.points]


def test_loguniform_and_duplicate_draws_collapse(folder):
    sp = sweep(folder, 'samples = 50\n[random]\nload = { kind = "loguniform", low = 0.1, high = 10 }\n')
    assert all(0.1 <= p.params["load"] < 10 for p in sp.points)
    # 50 draws from 2 values are at most 2 distinct points: identical configurations are one point
    sp = sweep(folder, 'samples = 50\n[random]\n'
                       '"engines.gpu0.policy" = { kind = "choice", values = ["orca", "vllm"] }\n')
    assert sorted(p.params["engines.gpu0.policy"] for p in sp.points) == ["orca", "vllm"]


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("body, field, says", [
    ('[grid]\n"engines.gpu1.token_budget" = [1]\n', "sweep field engines.gpu1", "valid keys here: ['gpu0']"),
    ('[grid]\n"workloads.chat.arrival.rate.x" = [1]\n', "sweep field workloads.chat.arrival.rate",
     "valid keys here: ['kind', 'rate_per_s']"),
    ('[grid]\n"engines.gpu0.token_budget" = []\n', "grid.'engines.gpu0.token_budget'", "non-empty array"),
    ("[grid]\n", "grid", "at least one field"),
    ("", "grid", "at least one field"),
    ('[grid]\nload = [0.5, 0]\n', "grid.load", "> 0"),
    ('samples = 3\n[random]\nload = { kind = "normal", mean = 1 }\n', "random.load.kind", "integers"),
    ('samples = 3\n[random]\nload = { kind = "uniform", low = 1 }\n', "random.load.high", "required"),
    ('samples = 3\n[random]\nload = { kind = "uniform", low = 1, high = 1 }\n', "random.load.high", "> low"),
    ('samples = 3\n[random]\nload = { kind = "uniform", low = 0.5, high = 1, step = 2 }\n', "random.load.step",
     "not a key"),
    ('[random]\nload = { kind = "uniform", low = 0.5, high = 1 }\n', "samples", "required"),
    ('[lists]\nload = [0.5, 1]\n"engines.gpu0.token_budget" = [128]\n', "lists", "same length"),
    ('[grid]\nload = [1]\n[lists]\nload = [2]\n', "sweep fields", "only one of"),
    ('colour = 1\n[grid]\nload = [1]\n', "colour", "not a sweep key"),
    ('[grid]\nload = [1]\n[options.capacity]\nsolver = "x"\n', "options.capacity", "not an analysis with options"),
    ('[grid]\nload = [1]\n[options.stability]\ntolerance = 0.1\n', "options.stability", "only when analyses"),
])
def test_bad_sweeps_name_the_field(folder, body, field, says):
    with pytest.raises(ModelError) as e:
        sweep(folder, body)
    assert e.value.field == field and says in e.value.allowed


def test_stability_options_are_checked_and_keyed(folder):
    head = HEAD.replace('["capacity"]', '["stability"]')
    with pytest.raises(ModelError) as e:
        sweep(folder, "[grid]\nload = [1]\n[options.stability]\nalpha = 1.5\n", head=head)
    assert e.value.field == "options.stability.alpha"
    with pytest.raises(ModelError, match="allowed: \\['alpha', 'extensions', 'tolerance'\\]"):
        sweep(folder, "[grid]\nload = [1]\n[options.stability]\nlevel = 1\n", head=head)
    a = sweep(folder, "[grid]\nload = [1]\n[options.stability]\ntolerance = 0.05\n", head=head)
    b = sweep(folder, "[grid]\nload = [1]\n[options.stability]\ntolerance = 0.1\n", head=head, name="b.toml")
    assert a.options == {"stability": {"tolerance": 0.05}} and a.points[0].point_id != b.points[0].point_id


@pytest.mark.parametrize("head, field", [
    (HEAD.replace('["capacity"]', '["capacity", "latency"]'), "analyses"),
    (HEAD.replace('"model.toml"', '"nope.toml"'), "model"),
    (HEAD.replace("replications = 2", "replications = 0"), "replications"),
    (HEAD.replace("horizon_s = 5", "horizon_s = -1"), "horizon_s"),
])
def test_bad_settings_name_the_field(folder, head, field):
    with pytest.raises(ModelError) as e:
        sweep(folder, "[grid]\nload = [1]\n", head=head)
    assert e.value.field == field


def test_a_bad_value_fails_before_any_point_is_computed(folder):
    sp = sweep(folder, '[grid]\n"engines.gpu0.token_budget" = [256, -3]\n')
    with pytest.raises(ModelError) as e:
        run_sweep(sp, results=folder / "r", workers=1)
    assert e.value.field == "engines.gpu0.token_budget"
    assert stored_ids(folder / "r") == set()
    # a new leaf key is allowed through; the model builder then names it and lists the valid ones
    sp = sweep(folder, '[grid]\n"engines.gpu0.token_budgt" = [256]\n')
    with pytest.raises(ModelError, match="token_budget"):
        run_sweep(sp, results=folder / "r", workers=1)


def test_network_calls_are_addressed_by_id_or_index():
    doc = S.tomllib.loads(Path("examples/networks/dag.toml").read_text())
    out = S.apply_overrides(doc, {"workflows.agent.calls.act.decode.mean": 7,
                                  "workflows.agent.calls.0.prefill.mean": 9})
    assert out["workflows"]["agent"]["calls"][1]["decode"]["mean"] == 7
    assert out["workflows"]["agent"]["calls"][0]["prefill"]["mean"] == 9
    assert doc["workflows"]["agent"]["calls"][1]["decode"]["mean"] == 128  # the base is not touched
    with pytest.raises(ModelError, match=r"\['plan', 'act', 'reply'\]"):
        S.apply_overrides(doc, {"workflows.agent.calls.think.decode.mean": 7})


# --------------------------------------------------------------------------------------- keys
def test_point_keys_are_stable_and_follow_every_input(folder, monkeypatch):
    body = '[grid]\n"engines.gpu0.token_budget" = [128, 256]\n'
    ids = [p.point_id for p in sweep(folder, body).points]
    assert ids == [p.point_id for p in sweep(folder, body, name="again.toml").points]
    # the key and the seed do not depend on the order of the grid
    rev = sweep(folder, '[grid]\n"engines.gpu0.token_budget" = [256, 128]\n', name="rev.toml")
    assert {(p.point_id, p.seed) for p in rev.points} == {(p.point_id, p.seed) for p in sweep(folder, body).points}
    changed = {
        "value": sweep(folder, body.replace("128", "129"), name="a.toml").points[0].point_id,
        "seed": sweep(folder, body, head=HEAD.replace("seed = 1", "seed = 3"), name="b.toml").points[0].point_id,
        "reps": sweep(folder, body, head=HEAD.replace("replications = 2", "replications = 3"),
                      name="c.toml").points[0].point_id,
        "analyses": sweep(folder, body, head=HEAD.replace('["capacity"]', '["capacity", "fluid"]'),
                          name="d.toml").points[0].point_id,
    }
    (folder / "model.toml").write_text(MODEL.replace("c_ms = 11.28", "c_ms = 11.3"))
    changed["model"] = sweep(folder, body, name="e.toml").points[0].point_id
    (folder / "model.toml").write_text(MODEL)
    monkeypatch.setattr(S, "_FINGERPRINT", "edited-code")
    changed["code"] = sweep(folder, body, name="f.toml").points[0].point_id
    assert all(v != ids[0] for v in changed.values()) and len(set(changed.values())) == len(changed)


def test_code_fingerprint_covers_the_package_sources():
    fp = S.code_fingerprint()
    assert len(fp) == 64 and fp == S.code_fingerprint()


# ------------------------------------------------------------------------------------- running
CONTRACT = {"point_id", "analysis", "seconds", "fluidllm_version", "finished_at",
            *[c for spec in OUT_COLUMNS.values() for c in spec]}


def test_run_stores_every_point_and_a_rerun_computes_none(folder):
    sp = sweep(folder, '[grid]\n"engines.gpu0.token_budget" = [128, 512]\n"engines.gpu0.policy" = ["sarathi", "vllm"]\n'
                       'load = [0.5, 1.5]\n', head=HEAD.replace('["capacity"]', '["capacity", "fluid", "simulate"]'))
    res = run_sweep(sp, workers=1)
    assert (res.points_total, res.points_computed, res.points_reused) == (8, 8, 0)
    assert Path(res.results) == folder / "s.results" and stored_ids(res.results) == set(res.point_ids)
    df = load_results(res.results, res.point_ids)
    assert len(df) == 8 * 3
    assert CONTRACT | {"param.engines.gpu0.token_budget", "param.engines.gpu0.policy", "param.load"} <= set(df.columns)
    assert df["param.engines.gpu0.token_budget"].dtype.kind == "i" and df["param.load"].dtype.kind == "f"
    assert (df["fluidllm_version"] == fluidllm.__version__).all()
    base = fluidllm.load_model(folder / "model.toml")
    for _, r in df[df.analysis == "capacity"].iterrows():
        m = base.with_engine("gpu0", token_budget=int(r["param.engines.gpu0.token_budget"]))
        c = fluidllm.capacity(m)
        # max_scale is relative to the point's rates (base x load)
        assert r["out.max_scale"] == pytest.approx(c.max_scale / r["param.load"], rel=1e-9)
        assert r["out.max_token_rate_per_s"] == pytest.approx(c.engines["gpu0"].max_token_rate_per_s, rel=1e-12)
        assert r["out.binding"] == c.engines["gpu0"].binding
    # fluid: the sarathi fluid drains below capacity, diverges above; vllm has no fluid model (error row)
    fl = df[df.analysis == "fluid"]
    for _, r in fl.iterrows():
        cap = df[(df.point_id == r.point_id) & (df.analysis == "capacity")].iloc[0]
        if r["param.engines.gpu0.policy"] == "vllm":
            assert isinstance(r["error"], str) and "fluid" in r["error"] and pd.isna(r["out.fluid_verdict"])
        else:
            assert r["out.fluid_verdict"] == ("DRAINS" if cap["out.max_scale"] > 1 else "DIVERGES")
            assert (r["out.drain_time_s"] > 0) == (cap["out.max_scale"] > 1)
    sim = df[df.analysis == "simulate"]
    # vLLM schedules whole prompts: a 129-token prompt never fits a budget of 128, nothing completes
    never = (sim["param.engines.gpu0.policy"] == "vllm") & (sim["param.engines.gpu0.token_budget"] == 128)
    assert ((sim["out.throughput_requests_per_s"] == 0) == never).all()
    sim = sim[~never]
    assert (sim["out.e2e_ms_p50"] <= sim["out.e2e_ms_p99"]).all()
    assert res.points_failed == 4  # the four vllm points
    again = run_sweep(load_sweep(folder / "s.toml"), workers=1)
    assert (again.points_computed, again.points_reused, again.points_failed) == (0, 8, 4)
    assert load_results(again.results, again.point_ids).equals(df)
    manifest = json.loads((folder / "s.results" / "_sweep.json").read_text())
    assert manifest["point_ids"] == list(res.point_ids) and manifest["points_total"] == 8


def test_same_seed_same_values_in_a_fresh_folder(folder):
    sp = sweep(folder, '[grid]\nload = [0.6, 0.9]\n', head=HEAD.replace('["capacity"]', '["simulate"]'))
    a = load_results(run_sweep(sp, results=folder / "a", workers=1).results)
    b = load_results(run_sweep(sp, results=folder / "b", workers=1).results)
    cols = [c for c in a.columns if c.startswith(("out.", "param.", "point_id"))]
    assert a[cols].equals(b[cols])


def test_cli_json_prints_one_object_and_resumes(folder, capsys):
    (folder / "c.toml").write_text(HEAD + "[grid]\nload = [0.5, 2.0]\n")
    assert cli_run([str(folder / "c.toml"), "--json", "--workers", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["points_total"] == 2 and out["points_computed"] == 2 and out["points_reused"] == 0
    assert out["results"] == str((folder / "c.results").resolve())
    assert cli_run([str(folder / "c.toml"), "--json", "--results", str(folder / "c.results")]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert (out["points_computed"], out["points_reused"]) == (0, 2)
    assert "sweep" not in cap.err  # --json: no progress bar
    assert cli_run([str(folder / "c.toml"), "--workers", "0"]) == 2
    assert "workers" in capsys.readouterr().err


def test_progress_bar_on_request(folder, capsys):
    (folder / "p.toml").write_text(HEAD + "[grid]\nload = [0.5]\n")
    assert cli_run([str(folder / "p.toml"), "--progress", "--workers", "1"]) == 0
    cap = capsys.readouterr()
    assert "1/1" in cap.err and "point" in cap.err and "1 computed" in cap.out


def test_scheduler_env_is_read(folder, monkeypatch):
    sp = sweep(folder, "[grid]\nload = [0.5]\n")
    monkeypatch.setenv("FLUIDLLM_DASK_SCHEDULER", "not-an-address")
    with pytest.raises(ModelError) as e:
        run_sweep(sp, workers=1)
    assert e.value.field == "scheduler" and e.value.value == "not-an-address"
    monkeypatch.setenv("FLUIDLLM_DASK_SCHEDULER", "local")
    assert run_sweep(sp, workers=1).scheduler == "in-process"


def test_load_results_errors(folder):
    with pytest.raises(ModelError):
        load_results(folder / "missing")
    (folder / "empty").mkdir()
    assert len(load_results(folder / "empty")) == 0
    with pytest.raises(ModelError, match="not stored"):
        load_results(folder / "empty", ["abc"])


def test_network_points_use_the_network_analyses(tmp_path):
    net = Path("examples/networks/dag.toml").resolve()
    (tmp_path / "n.toml").write_text(
        f'model = "{net}"\nanalyses = ["capacity", "fluid", "simulate"]\nreplications = 2\nhorizon_s = 5\nseed = 2\n'
        '[grid]\n"workflows.agent.calls.act.decode.mean" = [64, 128]\nload = [0.5, 4.0]\n')
    res = run_sweep(load_sweep(tmp_path / "n.toml"), workers=1)
    df = load_results(res.results, res.point_ids)
    assert res.points_failed == 0 and len(df) == 12
    base = S.tomllib.loads(net.read_text())
    for pid, g in df.groupby("point_id"):
        r = g.set_index("analysis")
        mean = int(r.loc["capacity", "param.workflows.agent.calls.act.decode.mean"])
        load = r.loc["capacity", "param.load"]
        m = S.build_model(S.apply_overrides(base, {"workflows.agent.calls.act.decode.mean": mean}), net.parent)
        c = fluidllm.capacity(m)
        assert r.loc["capacity", "out.max_scale"] == pytest.approx(c.max_scale / load, rel=1e-9)
        assert r.loc["capacity", "out.bottleneck"] in c.to_dict()["bottlenecks"]
        # the fluid model of a DAG under work-conserving rules drains inside the region, grows outside it
        inside = r.loc["capacity", "out.max_scale"] > 1
        assert r.loc["fluid", "out.fluid_verdict"] == ("DRAINS" if inside else "DIVERGES")
        assert r.loc["simulate", "out.mean_requests_in_system"] > 0  # 5 s: few whole jobs finish at load 0.5


def test_table_values_are_stored_as_canonical_json(folder):
    sp = sweep(folder, '[grid]\n"engines.gpu0.batch_time" = [{ kind = "constant", c_ms = 100.0 }, '
                       '{ kind = "affine", c_ms = 10.0, a_ms = 0.1 }]\n')
    df = load_results(run_sweep(sp, results=folder / "t", workers=1).results, [p.point_id for p in sp.points])
    bt = [json.loads(v) for v in df["param.engines.gpu0.batch_time"]]
    assert bt == [{"kind": "constant", "c_ms": 100.0}, {"kind": "affine", "c_ms": 10.0, "a_ms": 0.1}]
    # constant 100 ms batches of 512 tokens: 5120 tokens/s; affine: max_n n / (10 + 0.1 n) at n = 512
    assert df["out.max_token_rate_per_s"].tolist() == pytest.approx([5120.0, 512 / (10 + 51.2) * 1000], rel=1e-9)
