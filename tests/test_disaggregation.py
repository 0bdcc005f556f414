"""Disaggregated serving: provisioning prefill / decode pools against colocation (static planning LP)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fluidllm as fl
from fluidllm.capacity.disaggregation import (InheritedDecode, PrefillHalf, colocated_model, disaggregated_model,
                                              kv_transfer_ms, min_engines, pool_scales, provision)
from fluidllm.model.arrivals import PoissonArrival
from fluidllm.model.batchtime import Affine
from fluidllm.model.lengths import Deterministic, Independent
from fluidllm.model.model import Model
from fluidllm.model.traces import load_trace
from fluidllm.model.workload import Workload

ROOT = Path(__file__).resolve().parents[1]
KVB = 2 * 32 * 4096 * 2          # Llama-2-7B fp16 KV bytes per token = 524,288


def toy_engine(kv: int | None = None) -> fl.Engine:
    # t(n) = 10 + 0.1 n ms, b_max = 512, k_max = 64
    return fl.Engine("toy", 512, Affine(10.0, 0.1), max_batch_requests=64, kv_capacity_tokens=kv)


TOY = Independent(Deterministic(200), Deterministic(100))
RATE = 10.0


def test_toy_best_split_matches_hand_computation():
    # prefill pool: full 512-token prefill batches, 512 / 61.2 tokens/ms per engine, 200 tokens each;
    # decode pool: decode-only batches hold at most k_max = 64 tokens (one per request), 64 / 16.4
    # tokens/ms per engine (d / (10 + 0.1 d) increases in d), 100 tokens each.
    a = 1000 * 512 / 61.2 / 200      # prefill req/s per engine
    b = 1000 * 64 / 16.4 / 100       # decode req/s per engine
    ps = pool_scales(toy_engine(), TOY, RATE)
    assert ps.prefill * RATE == pytest.approx(a, rel=1e-6)
    assert ps.decode * RATE == pytest.approx(b, rel=1e-6)
    for n in range(2, 7):
        r = provision(toy_engine(), TOY, RATE, n)
        hand = {k: min(k * a, (n - k) * b) for k in range(1, n)}
        for s in r.splits:
            assert s.max_rate_per_s == pytest.approx(hand[s.n_prefill], rel=1e-6)
        k_best = max(hand, key=lambda k: (hand[k], -k))
        assert (r.best.n_prefill, r.best.n_decode) == (k_best, n - k_best)
        assert r.colocated_max_scale >= r.best.max_scale * (1 - 1e-9)


def test_network_lp_equals_pool_formula():
    # the full static planning LP of every split (free JSQ split in each pool) = min(n_p θ_P, n_d θ_D)
    for eng in (toy_engine(), toy_engine(kv=20000)):
        rp = provision(eng, TOY, RATE, 4, method="pools")
        rn = provision(eng, TOY, RATE, 4, method="network")
        for s, t in zip(rp.splits, rn.splits):
            assert t.max_scale == pytest.approx(s.max_scale, rel=1e-6)
        assert rn.colocated_max_scale == pytest.approx(rp.colocated_max_scale, rel=1e-6)


def test_colocated_equals_single_engine_capacity_times_n():
    eng = toy_engine(kv=20000)
    single = fl.capacity(Model({"toy": eng}, {"w": Workload("w", PoissonArrival(RATE), TOY, "toy")}))
    for n in (1, 3):
        nc = fl.capacity(colocated_model(eng, TOY, RATE, n))
        assert nc.max_scale == pytest.approx(n * single.max_scale, rel=1e-6)


def test_kv_transfer_delay_formula():
    assert KVB == 524288
    assert kv_transfer_ms(1000, KVB, 100) == pytest.approx(1000 * 524288 * 8 / 100e9 * 1000)   # 41.94 ms
    assert kv_transfer_ms(1000, KVB, 100) == pytest.approx(41.94304)
    np.testing.assert_allclose(kv_transfer_ms(np.array([0, 1, 2]), 1e9 / 8, 1.0), [0.0, 1000.0, 2000.0])
    with pytest.raises(fl.ModelError):
        kv_transfer_ms(10, KVB, 0)


def test_kv_moments_of_the_halves_use_the_joint_law():
    L = load_trace(dataset="azure-conv-2023").lengths()
    P, D = PrefillHalf(L), InheritedDecode(L)
    assert (P.mean_prefill, P.mean_decode, D.mean_prefill, D.mean_decode) == (L.mean_prefill, 0.0, 0.0, L.mean_decode)
    # g_P + g_D = g (the colocated request's KV token-batches), κ_D = the joint κ
    assert P.mean_kv_token_batches + D.mean_kv_token_batches == pytest.approx(L.mean_kv_token_batches, rel=1e-12)
    assert D.mean_decode_context == pytest.approx(L.mean_decode_context, rel=1e-12)
    vp, vd = L.prefill.astype(float), L.decode.astype(float)
    assert D.mean_kv_token_batches == pytest.approx(np.mean(vd * (vp + (vd + 1) / 2)), rel=1e-12)
    # the correlation matters: independent marginals would give another E[v_p v_d]
    assert abs(np.mean(vp * vd) - vp.mean() * vd.mean()) > 1e-3 * np.mean(vp * vd)
    cn = disaggregated_model(fl.Engine("x", 512, Affine(10.0, 0.1)), L, 1.0, 1, 2,
                             kv_bytes_per_token=KVB, link_gbps=100).class_network()
    dec = cn.classes[cn.index("serve.decode")]
    assert dec.mean_kv_token_batches == pytest.approx(D.mean_kv_token_batches)
    assert dec.engines == ("decode0", "decode1")


def test_example_toml_loads():
    m = fl.load_model(ROOT / "examples/networks/disaggregated.toml")
    assert m.class_names == ["serve.prefill", "serve.decode"]
    call = m.workflows["serve"].call("decode")
    assert call.inherits_kv and call.lengths.mean_prefill == 0
    assert fl.capacity(m).max_scale > 1


@pytest.fixture(scope="module")
def a100():
    return fl.load_model(ROOT / "examples/llama2_7b_a100_azure_conv.toml").engines["a100"]


@pytest.mark.parametrize("dataset", ["azure-conv-2023", "azure-code-2023"])
def test_azure_provisioning_report(a100, dataset):
    L = load_trace(dataset=dataset).lengths()
    rate = 10.0
    ps = pool_scales(a100, L, rate)
    print(f"\n{dataset}: one A100 engine: prefill {ps.prefill * rate:.3f} ({ps.prefill_binding}), decode "
          f"{ps.decode * rate:.3f} ({ps.decode_binding}), colocated {ps.colocated * rate:.3f} "
          f"({ps.colocated_binding}) req/s")
    print(f"{'n':>3} {'best split':>10} {'disagg req/s':>12} {'coloc req/s':>11} {'gain':>8}")
    for n in range(2, 9):
        r = provision(a100, L, rate, n, kv_bytes_per_token=KVB, link_gbps=100)
        print(f"{n:>3} {r.best.n_prefill:>4}P+{r.best.n_decode}D {r.best.max_rate_per_s:>12.3f} "
              f"{r.colocated_max_rate_per_s:>11.3f} {100 * r.gain:>+7.2f}%")
        # theory: colocation never loses in the LP (module docstring), and n engines carry n× one
        assert not r.disaggregation_beats_colocation
        assert r.colocated_max_scale >= r.best.max_scale * (1 - 1e-9)
        assert r.colocated_max_scale == pytest.approx(n * ps.colocated, rel=1e-9)
        assert r.to_dict()["best"]["n_prefill"] == r.best.n_prefill
    print(r.table())
    me = min_engines(a100, L, 40.0)
    print(me.table())
    assert me.n_colocated <= me.n_disaggregated
    assert me.disaggregated_max_scale > 1 and me.colocated_max_scale > 1
    assert (me.n_prefill - 1) * ps.prefill * rate / 40.0 <= 1 + 1e-9
    assert (me.n_decode - 1) * ps.decode * rate / 40.0 <= 1 + 1e-9


def test_bad_input():
    with pytest.raises(fl.ModelError):
        disaggregated_model(toy_engine(), TOY, 1.0, 0, 1)
    with pytest.raises(fl.ModelError):
        provision(toy_engine(), TOY, 1.0, 1)
    with pytest.raises(fl.ModelError):
        disaggregated_model(toy_engine(), TOY, 1.0, 1, 1, kv_bytes_per_token=KVB)
