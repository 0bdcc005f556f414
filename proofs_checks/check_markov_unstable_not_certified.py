"""Negative case: an unstable chain must not be certified, at any truncation.

FasterTransformer (stylised: decode-first, no mixing) is not work-conserving: with b_max = 4 and
(2, 2)-token requests it serves at most 2 requests per 3 batches (a prefill batch of two prompts,
then two decode-only batches of 2 tokens), below the budget's 1 request per batch. At 0.7 arrivals
per batch (Bernoulli) it is unstable: the mean number in system of the truncated chain grows with
the truncation. Every truncated chain is positive recurrent, so a state-by-state drift check on it
proves nothing; the certificate must not say "certified", and the instability must be proved for
the untruncated chain (level-independent 3-step drift 3·0.7·4 − 8 = +0.4 tokens beyond a finite
set, bounded jumps: transience criterion). Controls: the same chain at 0.5 arrivals per batch
(below 2/3) is certified by the same level-independent argument, and Sarathi at 0.7 (work-
conserving, 2.8 < 4 tokens per batch) by the work-conserving one.
"""
CLAIM = ("an unstable chain (FasterTransformer, b_max = 4, (2, 2) tokens, 0.7 > 2/3 requests per batch) is "
         "not certified at truncations 12, 24, 48 and is proved unstable for the untruncated chain")
SOURCE = "Li, Dai, Peng arXiv 2504.07347, Table 1 (FT not work-conserving); Meyn & Tweedie (2009) Thm 11.3.4, 19.1.2"
METHOD = "chain"


def check():
    from fluidllm import Engine, PolicySpec
    from fluidllm.markov import bernoulli_arrivals, build_chain, drift_certificate, instability_witness, solve
    from fluidllm.model.batchtime import Constant

    laws = dict(prefill={2: 1.0}, decode={2: 1.0})
    ft = Engine("e", 4, Constant(1.0), policy=PolicySpec("fastertransformer"))
    ok, parts = True, []
    means = []
    for m in (12, 24, 48):
        chain = build_chain(ft, arrivals=bernoulli_arrivals(0.7), max_requests=m, **laws)
        cert, wit = drift_certificate(chain), instability_witness(chain)
        means.append(solve(chain).mean_in_system)
        ok &= (not cert.certified) and cert.scope == "truncated" and wit.flagged and wit.scope == "untruncated"
        parts.append(f"M={m}: mean in system {means[-1]:.1f}, certified={cert.certified}, "
                     f"unstable={wit.flagged} ({wit.argument}, {wit.steps}-step drift {wit.drift_bound:+.3g})")
    ok &= means[0] < means[1] < means[2]
    below = drift_certificate(build_chain(ft, arrivals=bernoulli_arrivals(0.5), max_requests=12, **laws))
    sarathi = Engine("e", 4, Constant(1.0), policy=PolicySpec("sarathi"))
    wc = drift_certificate(build_chain(sarathi, arrivals=bernoulli_arrivals(0.7), max_requests=12, **laws))
    ok &= below.certified and below.scope == "untruncated" and wc.certified and wc.argument == "work-conserving"
    parts.append(f"controls: FT at 0.5 certified={below.certified} ({below.argument}, {below.steps} steps), "
                 f"sarathi at 0.7 certified={wc.certified} ({wc.argument})")
    return bool(ok), "; ".join(parts)
