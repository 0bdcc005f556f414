"""Theorem 2(b) on exact chains: below capacity a work-conserving policy has negative drift."""
CLAIM = ("work-conserving policies (orca, sarathi, kfcfs) are positive recurrent below capacity: "
         "Foster-Lyapunov certificate with V = tokens left for the untruncated chain; above capacity "
         "unstable (budget bound, transience criterion)")
SOURCE = "Li, Dai, Peng arXiv 2504.07347, Thm 2(b)"
METHOD = "chain"


def check():
    from fluidllm import Engine, PolicySpec
    from fluidllm.markov import build_chain, drift_certificate, instability_witness
    from fluidllm.model.batchtime import Constant

    # The proofs cover the untruncated chain (the truncation only feeds the diagnostics and the
    # cross-checks), so small truncations suffice.
    parts, ok = [], True
    for name in ("orca", "sarathi", "kfcfs"):
        below = build_chain(Engine("e", 3, Constant(1.0), policy=PolicySpec(name)), prefill={1: 0.5, 2: 0.5},
                            decode={0: 0.5, 1: 0.5}, arrivals={0: 0.5, 1: 0.3, 2: 0.2}, max_requests=5)
        cert = drift_certificate(below)
        above = build_chain(Engine("e", 2, Constant(1.0), policy=PolicySpec(name)), prefill={1: 0.5, 2: 0.5},
                            decode={0: 0.5, 1: 0.5}, arrivals={0: 0.2, 1: 0.3, 2: 0.5}, max_requests=5)
        wit = instability_witness(above)
        ok &= bool(cert.certified and cert.scope == "untruncated") and bool(wit.flagged and wit.scope == "untruncated")
        parts.append(f"{name}: {'certified (untruncated, ' + cert.argument + ')' if cert.certified else cert.verdict} "
                     f"[drift {cert.drift_bound:+.3g} tokens/batch beyond {cert.threshold_requests} requests; "
                     f"{below.n_states} states]; above capacity: "
                     f"{'unstable (untruncated, ' + wit.argument + ')' if wit.flagged else wit.verdict}")
    return ok, "; ".join(parts)
