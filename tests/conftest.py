"""Shared fixtures, helpers and hypothesis strategies for the model-layer tests."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

import fluidllm as F

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
# (they live in fluidllm.testing.strategies, for users' tests too)

from fluidllm.testing.strategies import (arrivals, batch_times, engines, finite, joint_laws,  # noqa: E402,F401
                                         length_laws, models, names, policies)


def is_finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)
