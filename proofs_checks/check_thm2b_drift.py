"""Theorem 2(b) on exact chains: below capacity a work-conserving policy has negative drift."""
CLAIM = ("work-conserving policies (orca, sarathi, kfcfs) are positive recurrent below capacity: "
         "Foster-Lyapunov certificate with V = tokens left; above capacity an instability witness")
SOURCE = "Li, Dai, Peng arXiv 2504.07347, Thm 2(b)"
METHOD = "chain"


def check():
    from fluidllm import Engine, PolicySpec
    from fluidllm.markov import build_chain, drift_certificate, instability_witness
    from fluidllm.model.batchtime import Constant

    parts, ok = [], True
    for name in ("orca", "sarathi", "kfcfs"):
        below = build_chain(Engine("e", 3, Constant(1.0), policy=PolicySpec(name)), prefill={1: 0.5, 2: 0.5},
                            decode={0: 0.5, 1: 0.5}, arrivals={0: 0.5, 1: 0.3, 2: 0.2}, max_requests=7)
        cert = drift_certificate(below)
        above = build_chain(Engine("e", 2, Constant(1.0), policy=PolicySpec(name)), prefill={1: 0.5, 2: 0.5},
                            decode={0: 0.5, 1: 0.5}, arrivals={0: 0.2, 1: 0.3, 2: 0.5}, max_requests=7)
        wit = instability_witness(above)
        ok &= bool(cert.certified) and bool(wit.flagged)
        parts.append(f"{name}: certified={cert.certified} ({below.n_states if hasattr(below, 'n_states') else len(below.states)} states), "
                     f"witness above={wit.flagged}")
    return ok, "; ".join(parts)
