"""Fig. 8: the four systems' batches on the worked example, in the reference and the vectorized core."""
CLAIM = "Fig. 8 worked example: vLLM, FT, Sarathi (b_max = 4) and Orca (b_max = 5) batches reproduced"
SOURCE = "Li, Dai, Peng arXiv 2504.07347, Fig. 8"
METHOD = "simulation (reference and vectorized core)"

# A, B, C decoding with 2, 4, 3 tokens left; D, E (1 prefill + 1 decode) arrive during batch 1.
EXPECTED = {
    ("vllm", 4): "Ad Bd Cd | Dp Ep | Ad Bd Cd Dd | Bd Cd Ed | Bd",
    ("orca", 5): "Ad Bd Cd | Ad Bd Cd Dp Ep | Bd Cd Dd Ed | Bd",
    ("fastertransformer", 4): "Ad Bd Cd | Ad Bd Cd | Bd Cd | Bd | Dp Ep | Dd Ed",
    ("sarathi", 4): "Ad Bd Cd | Ad Bd Cd Dp | Bd Cd Dd Ep | Bd Ed",
}


def _fmt(batches) -> str:
    name = "ABCDE"
    return " | ".join(" ".join(f"{name[i]}{'p' if p else 'd'}" for i, p, d in b) for b in batches)


def check():
    from fluidllm import Engine, PolicySpec
    from fluidllm.model.batchtime import Constant
    from fluidllm.sim.core import run_core
    from fluidllm.sim.draws import Requests
    from fluidllm.sim.reference import simulate_reference
    from fluidllm.sim.source import FixedSource

    init = [(0, 2), (0, 4), (0, 3)]
    req = Requests.from_lists([1.0, 2.0], [1, 1], [1, 1])
    bad = []
    for (pol, b), want in EXPECTED.items():
        eng = Engine("e", b, Constant(10.0), policy=PolicySpec(pol))
        ref = _fmt(x.tokens for x in simulate_reference(eng, req, 100.0, initial=init).batches)
        core = run_core(eng, FixedSource([req], 100.0), batch_log=True, initial=init).batch_log[0]
        got = _fmt(x["tokens"] for x in core)
        if ref != want or got != want:
            bad.append(f"{pol}: reference {ref!r}, core {got!r}, paper {want!r}")
    return not bad, "; ".join(bad) or "all four rows match the figure in both simulators"
