"""The real-system plug-ins of examples/real_systems/: each equals the built-in rule it reduces to,
and the memory-reserving admissions (LightLLM, TensorRT-LLM GUARANTEED_NO_EVICT) never preempt."""
from __future__ import annotations

from pathlib import Path

import pytest

import fluidllm as fl
from fluidllm.sim.reference import run_reference

RS = Path(__file__).resolve().parents[1] / "examples" / "real_systems"


def plugin(target: str, **params) -> fl.PolicySpec:
    return fl.PolicySpec("python", {"target": str(RS / target), **({"params": params} if params else {})})


def run(spec: fl.PolicySpec, load: float = 1.2, horizon_ms: float = 60_000, seed: int = 4, **engine):
    m = fl.load_model("examples/paper_codellama_b512.toml").scaled(load).with_engine("a100", policy=spec, **engine)
    return run_reference(m.engines["a100"], list(m.workloads.values()), horizon_ms, seed)


def same(a, b) -> bool:
    return len(a.batches) == len(b.batches) > 100 and all(
        x.tokens == y.tokens and x.end_ms == y.end_ms for x, y in zip(a.batches, b.batches))


def test_vllm_v1_defaults_equals_the_builtin_vllm_v1() -> None:
    a = run(plugin("vllm_v1_defaults.py:VLLMV1Defaults", max_num_batched_tokens=512, max_num_seqs=64))
    b = run(fl.PolicySpec("vllm-v1"), max_resident_requests=64)
    assert same(a, b)


def test_trtllm_without_a_kv_cap_is_kfcfs() -> None:
    assert same(run(plugin("trtllm_no_evict.py:TRTLLMGuaranteedNoEvict")), run(fl.PolicySpec("kfcfs")))


@pytest.mark.parametrize("target", ["trtllm_no_evict.py:TRTLLMGuaranteedNoEvict", "lightllm_peak_kv.py:LightLLMPeakKV"])
def test_memory_reserving_admission_never_preempts(target: str) -> None:
    kv = run(plugin(target), kv_capacity_tokens=20_000)
    assert kv.preemptions == 0 and len(kv.batches) > 100
    # the same load under vLLM v1 (admits on the current size only) does preempt: the cap binds
    assert run(plugin("vllm_v1_defaults.py:VLLMV1Defaults"), kv_capacity_tokens=20_000).preemptions > 0


def test_sglang_and_lightllm_never_mix_prefill_and_decode() -> None:
    for target in ("sglang_default.py:SGLangDefault", "lightllm_peak_kv.py:LightLLMPeakKV"):
        r = run(plugin(target), load=0.8)
        assert all(b.prefill_tokens == 0 or b.decode_tokens == 0 for b in r.batches)
        assert any(b.prefill_tokens > 0 for b in r.batches) and any(b.decode_tokens > 0 for b in r.batches)


def test_sglang_vectorized_form_equals_its_scalar_form(tmp_path: Path) -> None:
    (tmp_path / "scalar.py").write_text(
        f"import sys\nsys.path.insert(0, {str(RS)!r})\nfrom sglang_default import SGLangDefault\n"
        "class Scalar(SGLangDefault):\n    plan_vectorized = None\n")
    m = fl.load_model("examples/paper_codellama_b512.toml")
    for load in (0.5, 1.1):
        a = fl.simulate(m.with_engine("a100", policy=plugin("sglang_default.py:SGLangDefault")),
                        replications=4, horizon_s=60, load=load, seed=3)
        b = fl.simulate(m.with_engine("a100", policy=fl.PolicySpec("python", {"target": f"{tmp_path / 'scalar.py'}:Scalar"})),
                        replications=4, horizon_s=60, load=load, seed=3)
        assert a.backend != "reference" and b.backend == "reference"
        assert (a.series_backlog_tokens == b.series_backlog_tokens).all()
        assert (a.throughput_requests_per_s == b.throughput_requests_per_s).all()
