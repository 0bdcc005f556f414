"""The GPU profiler on the CPU (tiny shape): CSV columns, sanity of the timings, the fit, the CLI, errors.

Timings are real wall-clock measurements on a shared CI machine, so the sanity checks carry wide,
stated tolerances (never an absolute time): a 32x larger prompt must take longer, and no prompt may
take less than half the time of the next smaller one.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fluidllm import ModelError  # noqa: E402
from fluidllm.calibrate import fit_profile  # noqa: E402
from fluidllm.calibrate import profile_cli  # noqa: E402
from fluidllm.calibrate.profiler import (CSV_COLUMNS, SHAPES, GridPoint, _Decoder, _Timer, import_torch,  # noqa: E402
                                         parse_grid, profile_model)

GRID = "prefill:16,48,128,256,512;decode@128:1,16;mixed@128:64+8"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    # one thread: two threads on a 2-core CI box shared with other work make every pass jitter
    threads = torch.get_num_threads()
    run = profile_model("tiny", grid=GRID, warmup=1, repeats=7, seed=0, threads=1)
    assert torch.get_num_threads() == threads      # restored
    path = run.write_csv(tmp_path_factory.mktemp("prof") / "tiny.csv")
    return run, path


def test_csv_has_the_shared_columns_and_one_row_per_point(measured):
    run, path = measured
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert len(rows) == len(parse_grid(GRID)) and not run.skipped
    for r in rows:
        assert int(r["tokens_in_batch"]) == int(r["prefill_tokens"]) + int(r["decode_tokens"])
        assert float(r["iteration_ms"]) > 0 and float(r["linear_ms"]) > 0 and float(r["attention_ms"]) > 0
        assert float(r["tp_comm_ms"]) == 0.0
        # iteration_ms is the sum of the parts, as in the shared tables (6 significant digits each)
        seg = float(r["linear_ms"]) + float(r["attention_ms"]) + float(r["tp_comm_ms"])
        assert seg == pytest.approx(float(r["iteration_ms"]), rel=1e-5)
        assert "measured" in r["attention_source"]
    for r in run.rows:                    # the marks tile every pass: the median pass is a real pass time
        assert r.pass_ms > 0 and r.pass_ms_iqr >= 0
    assert {r["scenario"] for r in rows} == {"prefill_only", "decode_only_kv128", "mixed_chunk_plus_decode"}
    # KV footprint, full model: (P + D·(kv + 1)) tokens × 2 (K, V) × layers × kv_heads × head_dim × 4 bytes
    s = SHAPES["tiny"]
    mixed = next(r for r in rows if r["scenario"] == "mixed_chunk_plus_decode")
    want = (64 + 8 * 129) * 2 * s.n_layers * s.kv_heads * s.head_dim * 4 / 1e9
    assert float(mixed["kv_cache_gb_per_gpu"]) == pytest.approx(want, rel=1e-4)


def test_more_prefill_tokens_do_not_take_much_less_time(measured):
    run, _ = measured
    pre = sorted((r.point.prefill_tokens, r.iteration_ms) for r in run.rows if r.point.scenario == "prefill_only")
    t = [ms for _, ms in pre]
    for a, b in zip(t, t[1:]):
        assert b >= 0.5 * a, pre              # tolerance: a factor 2 of timing noise between neighbours
    assert t[-1] > t[0], pre                  # 32x the tokens: strictly longer


def test_fluidllm_calibrate_fits_the_profile(measured):
    _, path = measured
    res = fit_profile(path, scenario="prefill_only", families=["constant", "affine", "piecewise-linear"], n_boot=20)
    print(res.table())                        # R² of each family, reported in the test log
    aff = res.fit("affine")
    assert np.isfinite(aff.r2) and aff.params["a_ms"] > 0
    # linear layers dominate a prefill on the CPU: time grows ~linearly over a 32x range of tokens;
    # R² > 0.8 leaves room for timing noise on a loaded machine
    assert aff.r2 > 0.8, res.table()
    full = fit_profile(path, families=["two-feature"], n_boot=0)
    assert np.isfinite(full.r2)


def test_paged_and_contiguous_kv_give_the_same_pass():
    s = SHAPES["tiny"]
    dev = torch.device("cpu")
    with torch.inference_mode():
        dec = _Decoder(torch, s, 2, dev, torch.float32, True, seed=3)
        P, D, kv = 5, 3, 37
        paged = dec.kv_cache(D, kv, "paged", 2)
        contig = []
        for pk, pv, table in paged:
            view = lambda pool: pool[table].permute(0, 2, 1, 3, 4).reshape(D, s.kv_heads, -1, s.head_dim)  # noqa: E731
            contig.append((view(pk)[:, :, : kv + 1].clone(), view(pv)[:, :, : kv + 1].clone()))
        x = torch.randn(P + D, s.hidden, generator=torch.Generator().manual_seed(1))
        t = _Timer(torch, dev, 7)
        a = dec.forward(x, P, D, kv, paged, "paged", t)
        t.reset()
        b = dec.forward(x, P, D, kv, contig, "contiguous", t)
        assert len(t.gaps_ms()) == 6
    assert torch.allclose(a, b, atol=1e-5)


def test_layer_scaling_is_stated():
    run = profile_model("tiny", grid="prefill:32", layers=1, warmup=0, repeats=1)
    assert run.layer_scale == 2.0 and "1 of 2 layers timed x2" in run.rows[0].attention_source


def test_cli_json_prints_one_object_and_writes_the_csv(tmp_path):
    out = tmp_path / "p.csv"
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = profile_cli.run(["--profile", "--out", str(out), "--grid", "prefill:32,256;decode@64:4",
                              "--repeats", "2", "--warmup", "1", "--fit", "--n-boot", "0", "--threads", "1",
                              "--json"])
    assert rc == 0
    doc = json.loads(buf.getvalue())          # exactly one JSON object
    assert len(doc["rows"]) == 3 and out.is_file() and doc["fit"]["family"]
    assert doc["shape"]["name"] == "tiny" and doc["device"] == "cpu" and doc["dtype"] == "float32"


def _err(argv: list[str]) -> str:
    e = io.StringIO()
    with redirect_stderr(e), redirect_stdout(io.StringIO()):
        assert profile_cli.run(argv) == 2
    return e.getvalue()


def test_errors(tmp_path, monkeypatch):
    out = str(tmp_path / "p.csv")
    assert "device" in _err(["--profile", "--out", out, "--device", "tpu"])
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in _err(["--profile", "--out", out, "--device", "cuda"])
    assert "float32 on the CPU" in _err(["--profile", "--out", out, "--dtype", "float16"])
    assert "--out" in _err(["--profile"])
    assert "not both" in _err(["x.csv", "--profile", "--out", out])
    for bad in ("prefill", "decode:4", "mixed@64:12", "prefill:0", "attn:3"):
        with pytest.raises(ModelError):
            parse_grid(bad)
    with pytest.raises(ModelError, match="shape"):
        profile_model("gpt-5", grid="prefill:8")
    with pytest.raises(ModelError, match="layers"):
        profile_model("tiny", grid="prefill:8", layers=3)
    with pytest.raises(ModelError, match="repeats"):
        profile_model("tiny", grid="prefill:8", repeats=0)
    with pytest.raises(ModelError, match="kv_layout"):
        profile_model("tiny", grid="prefill:8", kv_layout="ring")
    monkeypatch.setitem(sys.modules, "torch", None)      # import torch now raises ImportError
    with pytest.raises(ModelError, match=r"pip install fluidllm\[gpu\]"):
        import_torch()
    assert "pip install fluidllm[gpu]" in _err(["--profile", "--out", out, "--grid", "prefill:8"])


def test_named_grids_use_the_shared_scenarios():
    std = parse_grid("standard")
    assert {g.scenario for g in std} == {"prefill_only", "decode_only_kv512", "decode_only_kv2048",
                                         "mixed_chunk_plus_decode"}
    assert max(g.prefill_tokens for g in std) == 4096 and max(g.decode_tokens for g in std) == 512
    assert GridPoint("mixed_chunk_plus_decode", 256, 8, 1024) in std


def test_kv_cap_skips_points_it_cannot_hold():
    run = profile_model("tiny", grid="prefill:16;decode@4096:64", warmup=0, repeats=1, max_kv_gb=1e-3)
    assert [r.point.scenario for r in run.rows] == ["prefill_only"]
    assert len(run.skipped) == 1 and "max_kv_gb" in run.skipped[0][1]


def test_decoder_layer_matches_a_plain_reference():
    """One layer against a float64 NumPy transcription of the module docstring: RMSNorm, QKV, RoPE,
    causal prefill attention, decode attention over the cache (GQA: query head h reads KV head
    h // (heads / kv_heads)), output projection, SwiGLU MLP, residuals."""
    from fluidllm.calibrate.profiler import Shape

    s = Shape("t", 1, 32, 4, 2, 48)
    dev = torch.device("cpu")
    P, D, kv = 4, 2, 6
    with torch.inference_mode():
        dec = _Decoder(torch, s, 1, dev, torch.float32, True, seed=5)
        (cache,) = dec.kv_cache(D, kv, "contiguous", 1)
        ck0 = cache[0].double().numpy().copy()
        cv0 = cache[1].double().numpy().copy()
        x = torch.randn(P + D, s.hidden, generator=torch.Generator().manual_seed(2))
        got = dec.forward(x, P, D, kv, [cache], "contiguous", _Timer(torch, dev, 4)).double().numpy()
        L = {k: v.double().numpy() for k, v in dec.layers[0].items()}
        pos = torch.tensor(list(range(P)) + [kv] * D)

        def rope(z):  # the decoder's own RoPE (checked separately below), applied to float64
            return dec._rope(torch.from_numpy(z), pos).numpy()

        # RoPE rotates each (i, i + hd/2) pair by an angle: norms per pair are kept
        z = np.random.default_rng(0).standard_normal((P + D, 2, s.head_dim))
        r = rope(z)
        h2 = s.head_dim // 2
        assert np.allclose(z[..., :h2] ** 2 + z[..., h2:] ** 2, r[..., :h2] ** 2 + r[..., h2:] ** 2)
        assert np.allclose(r[0], z[0])        # position 0: no rotation

    X = x.double().numpy()
    hd, nh, kvh = s.head_dim, s.heads, s.kv_heads

    def rms(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + 1e-6) * w

    qkv = rms(X, L["ln1"]) @ L["wqkv"]
    q = rope(qkv[:, : nh * hd].reshape(-1, nh, hd))
    k = rope(qkv[:, nh * hd: (nh + kvh) * hd].reshape(-1, kvh, hd))
    v = qkv[:, (nh + kvh) * hd:].reshape(-1, kvh, hd)
    att = np.zeros((P + D, nh, hd))
    for h in range(nh):
        g = h // (nh // kvh)
        for i in range(P):                    # causal over the prompt itself
            sc = k[: i + 1, g] @ q[i, h] / np.sqrt(hd)
            w = np.exp(sc - sc.max())
            att[i, h] = (w / w.sum()) @ v[: i + 1, g]
        for d in range(D):                    # cache positions 0..kv-1, then the new token at kv
            K = np.vstack([ck0[d, g, :kv], k[P + d, g]])
            V = np.vstack([cv0[d, g, :kv], v[P + d, g]])
            sc = K @ q[P + d, h] / np.sqrt(hd)
            w = np.exp(sc - sc.max())
            att[P + d, h] = (w / w.sum()) @ V
    X1 = X + att.reshape(P + D, -1) @ L["wo"]
    gu = rms(X1, L["ln2"]) @ L["wgu"]
    gt, up = gu[:, : s.mlp], gu[:, s.mlp:]
    want = X1 + (gt / (1 + np.exp(-gt)) * up) @ L["wd"]
    assert np.allclose(got, want, atol=1e-5), np.abs(got - want).max()
    # torch < 2.5 has no enable_gqa: the repeated-KV fallback gives the same pass
    with torch.inference_mode():
        dec.native_gqa = False
        (cache2,) = dec.kv_cache(D, kv, "contiguous", 1)
        cache2[0].copy_(torch.from_numpy(ck0).float())
        cache2[1].copy_(torch.from_numpy(cv0).float())
        old = dec.forward(x, P, D, kv, [cache2], "contiguous", _Timer(torch, dev, 4)).double().numpy()
    assert np.allclose(old, want, atol=1e-5)
