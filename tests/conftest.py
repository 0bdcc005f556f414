"""Shared fixtures, helpers and hypothesis strategies for the model-layer tests."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st

import fluidllm as F
from fluidllm.model.policy import POLICIES

SHARED_TRACES = Path("/work/shared/traces")
AZURE_DIR = SHARED_TRACES / "azure_llm_2023"
MOONCAKE_DIR = SHARED_TRACES / "mooncake_fast25"

# `make test` (and so CI) must be deterministic: hypothesis derandomised, its examples fixed per test.
# HYPOTHESIS_PROFILE=explore runs fresh random examples (more of them) to hunt for new failures.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=500, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: two-sided 99.9 % normal quantile: a correct law fails one such CLT check with probability ~0.1 %.
Z999 = 3.2905267314919255


# --------------------------------------------------------------------------------- helpers


def pmf_moments(law: F.LengthLaw, tail: float = 1e-15) -> tuple[float, float, float]:
    """(total mass, mean, variance) summed from ``law.pmf`` over 0..support_upto(tail)."""
    K = law.support_upto(tail)
    k = np.arange(0, K + 1)
    p = law.pmf(k)
    kf = k.astype(float)
    total = float(np.sum(p))
    m1 = float(np.sum(kf * p))
    m2 = float(np.sum(kf * kf * p))
    return total, m1, m2 - m1 * m1


def rel_close(a: float, b: float, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    return abs(a - b) <= max(rel * max(abs(a), abs(b)), abs_)


def write_azure_csv(path: Path, rows: list[tuple[str, int, int]]) -> Path:
    """Azure-2023-format CSV (TIMESTAMP, ContextTokens, GeneratedTokens)."""
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    lines += [f"{t},{p},{d}" for t, p, d in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_mooncake_jsonl(path: Path, rows: list[tuple[float, int, int]]) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"timestamp": t, "input_length": p, "output_length": d, "hash_ids": [0]})
                            + "\n" for t, p, d in rows))
    return path


def write_profile_csv(path: Path, tokens: list[int], times: list[float]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("tokens_in_batch,iteration_ms\n" + "".join(f"{n},{t}\n" for n, t in zip(tokens, times)))
    return path


AZURE_SMALL = [
    ("2023-11-16 18:15:46.6805900", 374, 44),
    ("2023-11-16 18:15:50.9951690", 396, 109),
    ("2023-11-16 18:15:51.2000000", 879, 0),
    ("2023-11-16 18:15:53.0000000", 91, 12),
]
MOONCAKE_SMALL = [(0, 6758, 500), (0, 7322, 490), (40, 7236, 794), (125.5, 12, 3)]


@pytest.fixture
def azure_small(tmp_path: Path) -> Path:
    return write_azure_csv(tmp_path / "small_azure.csv", AZURE_SMALL)


@pytest.fixture
def mooncake_small(tmp_path: Path) -> Path:
    return write_mooncake_jsonl(tmp_path / "small_mooncake.jsonl", MOONCAKE_SMALL)


# --------------------------------------------------------------------------------- strategies

finite = dict(allow_nan=False, allow_infinity=False)


@st.composite
def length_laws(draw, min_at_least: int = 0, depth: int = 1, scale: float = 500.0):
    """Any marginal length law whose support starts at ``>= min_at_least``, means up to ~``scale``.

    Lognormal parameters are kept where its exact moments are cheap (sigma <= 0.8, mean <= 300).
    """
    lo = min_at_least
    kinds = ["deterministic", "geometric", "poisson", "uniform", "lognormal", "empirical"]
    if depth > 0:
        kinds.append("mixture")
    kind = draw(st.sampled_from(kinds))
    if kind == "deterministic":
        return F.Deterministic(draw(st.integers(lo, lo + int(10 * scale))))
    if kind in ("geometric", "poisson"):
        mn = draw(st.integers(lo, lo + 3))
        mean = draw(st.floats(mn, mn + scale, **finite))
        return (F.Geometric if kind == "geometric" else F.Poisson)(mean, mn)
    if kind == "uniform":
        low = draw(st.integers(lo, lo + 200))
        return F.Uniform(low, draw(st.integers(low, low + int(6 * scale))))
    if kind == "lognormal":
        # ceil(Y) >= 1 always: fine for any min_at_least <= 1
        return F.Lognormal(draw(st.floats(0.5, min(300.0, scale), **finite)),
                          draw(st.floats(0.05, 0.8 if scale >= 300 else 0.5, **finite)))
    if kind == "empirical":
        vals = draw(st.lists(st.integers(lo, lo + int(40 * scale)), min_size=1, max_size=40))
        return F.Empirical(np.array(vals))
    n = draw(st.integers(1, 3))
    raw = draw(st.lists(st.floats(0.05, 1.0, **finite), min_size=n, max_size=n))
    w = [x / sum(raw) for x in raw]
    w[-1] = 1.0 - sum(w[:-1])
    comps = [draw(length_laws(min_at_least=lo, depth=depth - 1, scale=scale)) for _ in range(n)]
    return F.Mixture(tuple(w), tuple(comps))


@st.composite
def joint_laws(draw):
    if draw(st.booleans()):
        n = draw(st.integers(1, 30))
        pre = draw(st.lists(st.integers(1, 9000), min_size=n, max_size=n))
        dec = draw(st.lists(st.integers(0, 2000), min_size=n, max_size=n))
        return F.EmpiricalPairs(np.array(pre), np.array(dec))
    return F.Independent(draw(length_laws(min_at_least=1)), draw(length_laws()))


@st.composite
def arrivals(draw):
    kind = draw(st.sampled_from(["poisson", "deterministic", "renewal", "trace"]))
    rate = draw(st.floats(0.0, 1e4, **finite))
    if kind == "poisson":
        return F.PoissonArrival(rate)
    if kind == "deterministic":
        return F.DeterministicArrival(rate, draw(st.floats(0.0, 1e5, **finite)))
    if kind == "renewal":
        return F.RenewalArrival(rate, draw(st.floats(0.01, 50.0, **finite)),
                                draw(st.sampled_from(["gamma", "lognormal", "weibull"])))
    gaps = draw(st.lists(st.floats(0.0, 1e4, **finite), min_size=1, max_size=20))
    speed = draw(st.sampled_from([1.0, 0.5, 2.0, 7.25]))
    return F.TraceArrival(np.concatenate([[0.0], np.cumsum(gaps)]), speed)


@st.composite
def policies(draw):
    name = draw(st.sampled_from(sorted(POLICIES)))
    opts: dict = {}
    if name in ("fastertransformer", "fastertransformer-static", "vllm") and draw(st.booleans()):
        opts["split_long_prompts"] = draw(st.booleans())
    if name in ("orca", "sarathi", "vllm-v1") and draw(st.booleans()):
        opts["chunk_size"] = draw(st.one_of(st.none(), st.integers(1, 4096)))
    if name == "vllm-v1" and draw(st.booleans()):
        opts["preemption"] = "recompute"
    if name == "priority":
        opts["inner"] = draw(st.sampled_from(["kfcfs", "sarathi", "orca", "vllm"]))
        opts["order"] = draw(st.lists(st.sampled_from(["a", "b", "chat", "code"]), max_size=3))
    if name in ("wait", "nested-wait"):
        opts["thresholds"] = draw(st.lists(st.integers(1, 1000), max_size=3))
    if name == "python":
        opts["target"] = "my_policy.py:MyPolicy"
    return F.PolicySpec(name, opts)


@st.composite
def batch_times(draw, token_budget: int):
    kind = draw(st.sampled_from(["constant", "affine", "piecewise-linear", "staircase", "two-feature",
                                 "table", "preset"]))
    c = draw(st.floats(0.01, 100.0, **finite))
    a = draw(st.floats(0.0, 50.0, **finite))
    if kind == "constant":
        return F.Constant(c)
    if kind == "affine":
        return F.Affine(c, a)
    if kind == "piecewise-linear":
        return F.PiecewiseLinear(c, a, draw(st.integers(0, 1024)))
    if kind == "staircase":
        return F.Staircase(c, a, draw(st.integers(1, 1024)))
    if kind == "two-feature":
        return F.TwoFeature(c, a, draw(st.integers(0, 1024)), draw(st.floats(0, 1, **finite)),
                            draw(st.floats(0, 1e-3, **finite)), draw(st.floats(0, 1e-5, **finite)))
    if kind == "preset":
        from fluidllm.presets import get_preset, preset_names

        return get_preset(draw(st.sampled_from(preset_names())))
    inner = draw(st.lists(st.integers(2, token_budget + 500), max_size=8, unique=True))
    tokens = sorted({1, token_budget, *inner})
    if len(tokens) < 2:
        tokens = [1, 2]
    times = np.cumsum(draw(st.lists(st.floats(0.01, 20.0, **finite), min_size=len(tokens),
                                    max_size=len(tokens))))
    return F.Table(np.array(tokens, float), times)


@st.composite
def engines(draw, name: str):
    b = draw(st.integers(1, 4096))
    cap = st.one_of(st.none(), st.integers(1, 10**6))
    return F.Engine(name, b, draw(batch_times(b)), draw(cap), draw(cap), draw(cap), draw(policies()))


names = st.from_regex(r"[a-z][a-z0-9_-]{0,7}", fullmatch=True)


@st.composite
def models(draw):
    enames = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    eng = {n: draw(engines(n)) for n in enames}
    wnames = draw(st.lists(names, max_size=3, unique=True))
    wl = {n: F.Workload(n, draw(arrivals()), draw(joint_laws()), draw(st.sampled_from(enames))) for n in wnames}
    return F.Model(eng, wl)


def is_finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)
