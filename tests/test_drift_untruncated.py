"""Drift certificates and instability proofs are about the *untruncated* chain (fluidllm.markov.drift).

(a) the FasterTransformer chain of the issue (b_max = 4, (2, 2)-token requests, Bernoulli(0.7)
    arrivals against a service ceiling of 2/3 request per batch) is not certified at truncations
    12, 24, 48 although its mean number in system grows with the truncation, and it is proved
    unstable (level-independent 3-step drift + transience criterion); below the ceiling it is
    certified by the same argument;
(b) work-conserving policies below capacity are certified untruncated (exact drift λ̄E[v] − b_max),
    just above capacity they are not, and the budget bound proves them unstable;
(c) the untruncated drift of tokens left is the truncated drift plus the lost arrivals' tokens;
(d) random small models: "certified" / "flagged" never disagree with the known stability condition
    (work-conserving: λ̄E[v] < b_max; FasterTransformer with one request kind: λ̄ < n/(1 + v_d),
    n = ⌊b_max / v_p⌋ prompts per prefill batch);
(e) printed and JSON forms say "truncated, not a proof" unless there is an untruncated argument;
    a plug-in gets no level-independent proof.
"""
from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fluidllm.markov import (GeometricDecode, bernoulli_arrivals, build_chain, drift, drift_certificate,
                             instability_witness, solve, untruncated_drift)
from fluidllm.model import Constant, Engine, PolicySpec

FT_LAWS = dict(prefill={2: 1.0}, decode={2: 1.0})


def engine(policy: str, b_max: int = 4, **kw) -> Engine:
    return Engine("e", b_max, Constant(1.0), policy=PolicySpec(policy, kw.pop("options", {})), **kw)


def jsonable(result) -> dict:
    d = result.to_dict()
    json.dumps(d, allow_nan=False)
    return d


# --------------------------------------------------------------- (a) the FasterTransformer chain


@pytest.mark.parametrize("max_requests,mean_at_least", [(12, 9.0), (24, 20.0), (48, 44.0)])
def test_fastertransformer_above_its_ceiling_is_not_certified(max_requests, mean_at_least):
    chain = build_chain(engine("fastertransformer"), arrivals=bernoulli_arrivals(0.7), max_requests=max_requests,
                        **FT_LAWS)
    assert solve(chain).mean_in_system > mean_at_least          # grows with the truncation: 9.2, 20.7, 44.7
    cert = drift_certificate(chain)
    assert not cert.certified and not cert.proof and cert.scope == "truncated" and cert.argument == "none"
    assert "certified:" not in cert.verdict
    assert not cert.truncated_holds                              # boundary drift is honest now: no sliver
    w = instability_witness(chain)
    assert w.flagged and w.proof and w.scope == "untruncated" and w.argument == "level-independent"
    # 3 batches from any high state: one prefill (4 tokens) + two decodes (2 + 2) against 3 · 0.7 · 4.
    assert w.steps == 3 and w.drift_bound == pytest.approx(3 * 0.7 * 4 - 8)
    assert w.head_length == 2 and w.threshold_requests == 2 + 4 + 2 * 4
    assert jsonable(w)["verdict"].startswith("unstable")
    assert jsonable(cert)["certified"] is False


def test_fastertransformer_below_its_ceiling_is_certified_level_independent():
    chain = build_chain(engine("fastertransformer"), arrivals=bernoulli_arrivals(0.5), max_requests=12, **FT_LAWS)
    cert = drift_certificate(chain)
    assert cert.certified and cert.scope == "untruncated" and cert.argument == "level-independent"
    assert cert.steps == 3 and cert.drift_bound == pytest.approx(3 * 0.5 * 4 - 8)
    assert cert.locality_states_checked > 0
    assert not instability_witness(chain).flagged


def test_custom_v_on_the_unstable_chain_is_truncated_not_a_proof():
    # V = number in system reproduces the old false "certified": a band of negative drift just
    # below the truncation. It is reported as truncated, not a proof.
    chain = build_chain(engine("fastertransformer"), arrivals=bernoulli_arrivals(0.7), max_requests=12, **FT_LAWS)
    cert = drift_certificate(chain, lambda s: len(s))
    assert cert.truncated_holds and not cert.certified
    assert cert.verdict.startswith("truncated, not a proof")
    assert jsonable(cert)["verdict"].startswith("truncated, not a proof")


# ------------------------------------------------------------- (b) work-conserving policies


@pytest.mark.parametrize("policy", ["sarathi", "orca", "kfcfs"])
def test_work_conserving_below_capacity_is_certified_untruncated(policy):
    chain = build_chain(engine(policy), arrivals=bernoulli_arrivals(0.5), max_requests=12, **FT_LAWS)
    cert = drift_certificate(chain)
    assert cert.certified and cert.scope == "untruncated" and cert.argument == "work-conserving"
    assert cert.drift_bound == pytest.approx(0.5 * 4 - 4) and cert.threshold_requests == 4
    assert not instability_witness(chain).flagged


@pytest.mark.parametrize("policy", ["sarathi", "orca"])
def test_work_conserving_near_capacity(policy):
    below = build_chain(engine(policy), arrivals={0: 0.525, 2: 0.475}, max_requests=8, **FT_LAWS)  # 3.8 < 4
    cert = drift_certificate(below)
    assert cert.certified and cert.drift_bound == pytest.approx(0.95 * 4 - 4)
    above = build_chain(engine(policy), arrivals={0: 0.475, 2: 0.525}, max_requests=8, **FT_LAWS)  # 4.2 > 4
    assert not drift_certificate(above).certified
    w = instability_witness(above)
    assert w.flagged and w.argument == "budget bound" and w.drift_bound == pytest.approx(1.05 * 4 - 4)


def test_geometric_decode_and_resident_cap():
    laws = dict(prefill={1: 0.5, 2: 0.5}, decode=GeometricDecode(0.5), arrivals=bernoulli_arrivals(0.4))
    cert = drift_certificate(build_chain(engine("sarathi", 3), max_requests=6, **laws))   # 0.4 · 3.5 = 1.4 < 3
    assert cert.certified and cert.argument == "work-conserving"
    # A resident cap below the budget breaks the work-conserving argument (demand may stay < b_max).
    capped = drift_certificate(build_chain(engine("sarathi", 3, max_resident_requests=1), max_requests=4, **laws))
    assert capped.argument != "work-conserving"


# --------------------------------------------------------------------- (c) the drift identity


def test_untruncated_drift_is_truncated_drift_plus_lost_tokens():
    cases = [(engine("fastertransformer"), dict(FT_LAWS, arrivals=bernoulli_arrivals(0.7)), 6),
             (engine("sarathi", 3), dict(prefill={1: 0.5, 2: 0.5}, decode={0: 0.5, 2: 0.5},
                                         arrivals={0: 0.5, 1: 0.3, 2: 0.2}), 4),
             (engine("orca", 2), dict(prefill={1: 1.0}, decode=GeometricDecode(0.5), arrivals={0: 0.3, 2: 0.7}), 5)]
    for eng, laws, m in cases:
        chain = build_chain(eng, max_requests=m, **laws)
        exact = untruncated_drift(chain)
        assert np.allclose(exact, drift(chain) + np.asarray(chain.lost) * chain.mean_request_tokens)
        assert np.all(exact >= drift(chain) - 1e-12)
        assert np.any(exact[chain.loss_prob > 0] > drift(chain)[chain.loss_prob > 0])


# -------------------------------------------------------------------- (d) random small models


def test_random_models_never_disagree_with_the_stability_condition():
    rng = random.Random(20250701)
    seen = {"certified": 0, "flagged": 0}
    for _ in range(36):
        b = rng.choice((2, 3, 4))
        a1 = rng.random()
        a2 = rng.random() * (1 - a1)
        arrivals = {0: 1 - a1 - a2, 1: a1, 2: a2}
        lam = a1 + 2 * a2
        if rng.random() < 0.5:                               # work-conserving, several request kinds
            policy = rng.choice(("sarathi", "orca", "kfcfs"))
            pre = {1: 0.5, 2: 0.5} if b > 2 else {1: 1.0}
            dec = GeometricDecode(0.5) if rng.random() < 0.3 else {0: 0.4, 1: 0.6}
            chain = build_chain(engine(policy, b), prefill=pre, decode=dec, arrivals=arrivals, max_requests=3)
            load = chain.arrival_tokens_per_step
            stable, unstable = load < b, load > b
        else:                                                # FasterTransformer, one request kind
            policy = "fastertransformer"
            p, d = rng.randint(1, b), rng.randint(0, 3)
            chain = build_chain(engine(policy, b), prefill={p: 1.0}, decode={d: 1.0}, arrivals=arrivals,
                                max_requests=3)
            ceiling = (b // p) / (1 + d)
            stable, unstable = lam < ceiling, lam > ceiling
        cert = drift_certificate(chain)
        w = instability_witness(chain)
        info = (policy, b, chain.prefill, chain.decode, arrivals, cert.reason, w.reason)
        assert not (cert.certified and not stable), info
        assert not (w.flagged and not unstable), info
        if policy != "fastertransformer":                    # the work-conserving condition is decided exactly
            assert cert.certified == stable and w.flagged == unstable, info
        seen["certified"] += cert.certified
        seen["flagged"] += w.flagged
    assert seen["certified"] >= 5 and seen["flagged"] >= 5


def test_several_request_kinds_reach_high_levels_on_a_real_sample_path():
    # FT with decode 1 or 2: at best one request per batch (2 prompts, then one decode batch), yet
    # λ̄ = 1.1 requests and 3.85 < b_max = 4 tokens per batch: the budget bound does not apply.
    chain = build_chain(engine("fastertransformer"), prefill={2: 1.0}, decode={1: 0.5, 2: 0.5},
                        arrivals={0: 0.45, 2: 0.55}, max_requests=6)
    assert chain.arrival_tokens_per_step < 4
    w = instability_witness(chain)
    assert w.flagged and w.argument == "level-independent"
    assert not drift_certificate(chain).certified


# ---------------------------------------------------------------- (e) plug-ins and bad input


def test_plugin_gets_no_level_independent_proof(tmp_path: Path):
    (tmp_path / "ft.py").write_text(textwrap.dedent('''
        class DecodeOnlyFirst:
            name = "decode-only-first"
            def plan(self, view):
                dec = [r for r in view.requests if r.prefill_left == 0 and r.decode_left > 0]
                if dec:
                    return {r.id: (0, 1) for r in dec[:view.token_budget]}
                plan, budget = {}, view.token_budget
                for r in view.requests:
                    if r.prefill_left > budget:
                        break
                    plan[r.id] = (r.prefill_left, 0)
                    budget -= r.prefill_left
                return plan
    '''))
    spec = PolicySpec("python", {"target": f"{tmp_path / 'ft.py'}:DecodeOnlyFirst"})
    eng = Engine("e", 4, Constant(1.0), policy=spec)
    chain = build_chain(eng, arrivals=bernoulli_arrivals(0.5), max_requests=6, **FT_LAWS)
    cert = drift_certificate(chain)
    assert not cert.certified and "plug-in" in cert.reason
    over = build_chain(eng, arrivals={0: 0.4, 2: 0.6}, max_requests=5, **FT_LAWS)       # 4.8 > 4 tokens
    assert instability_witness(over).argument == "budget bound"


def test_bad_limits_name_the_field():
    from fluidllm.errors import ModelError

    chain = build_chain(engine("fastertransformer"), arrivals=bernoulli_arrivals(0.5), max_requests=4, **FT_LAWS)
    for kw, name in ((dict(max_steps=0), "max_steps"), (dict(max_head=0), "max_head"),
                     (dict(max_states=0), "max_states"), (dict(eps=0), "eps")):
        with pytest.raises(ModelError) as e:
            drift_certificate(chain, **kw)
        assert e.value.field == name
        with pytest.raises(ModelError):
            instability_witness(chain, **kw)
    # A search that is too large gives no proof, and says so.
    small = drift_certificate(chain, max_states=3)
    assert not small.certified and "max_states" in small.reason
