"""The truth harness at scale: capacity's claims against the simulator on many random models.

    python benchmarks/truth_harness.py [--models 60] [--seed 0] [--verdicts] [--quick]

Each random model (:func:`fluidllm.testing.truth.random_model`: every batch-time family, caps,
KV limits, length laws, policies) gets :func:`fluidllm.testing.truth.check_model`: useful tokens/s
under overload ≤ μ*; for work-conserving policies the saturated token rate equals b_max/t(b_max)
where the claim is exact and stays below the work-conserving bound otherwise; completions ≤ the
claimed capacity with a resident cap; the LP mix is formable under the caps; with ``--verdicts``
the stability verdicts at 0.8 and 1.25 of an exact claim. Prints one row per model and a summary
table per (family, policy class); exits 1 if any check fails. Progress on stderr.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import numpy as np

from fluidllm.testing.truth import REGRESSION_CASES, check_model, random_model, regression_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, default=3000, help="horizon in full-batch times")
    ap.add_argument("--verdicts", action="store_true", help="also the stability verdicts around exact claims")
    ap.add_argument("--quick", action="store_true", help="12 models, 1500 batches")
    a = ap.parse_args(argv)
    n, batches = (12, 1500) if a.quick else (a.models, a.batches)
    rows = []
    t0 = time.perf_counter()
    cases = [(lab, regression_model(lab)) for lab in sorted(REGRESSION_CASES)]
    cases += [(f"random-{a.seed + i}", random_model(np.random.default_rng([a.seed, i]))) for i in range(n)]
    for i, (lab, m) in enumerate(cases):
        t = time.perf_counter()
        row = check_model(m, label=lab, batches=batches, seed=a.seed + i, verdicts=a.verdicts)
        e = next(iter(m.engines.values()))
        caps = ",".join(k for k, v in (("k_max", e.max_batch_requests), ("R", e.max_resident_requests),
                                       ("KV", e.kv_capacity_tokens)) if v is not None) or "-"
        rows.append((lab, e.batch_time.kind, caps, row))
        print(f"[{i + 1}/{len(cases)}] {lab:<32} {e.batch_time.kind:<16} b={e.token_budget:<4} caps={caps:<6} "
              f"{row.policy:<18} exact={row.exact!s:<5} {'ok' if row.ok else 'FAIL'} ({time.perf_counter() - t:.1f} s)",
              file=sys.stderr)
    summary: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for lab, fam, caps, row in rows:
        key = (fam, "work-conserving" if row.work_conserving else "not work-conserving")
        summary[key][0] += 1
        summary[key][1] += int(row.ok)
        summary[key][2] += len(row.checks)
    print("| batch time | policy class | models | all checks hold | checks |")
    print("|---|---|---:|---:|---:|")
    for (fam, cls), (k, ok, nc) in sorted(summary.items()):
        print(f"| {fam} | {cls} | {k} | {ok} | {nc} |")
    fails = [(lab, c) for lab, _, _, row in rows for c in row.failures]
    print(f"\n{len(rows)} models, {sum(len(r.checks) for *_, r in rows)} checks, {len(fails)} failed, "
          f"{time.perf_counter() - t0:.0f} s")
    for lab, c in fails:
        print(f"FAIL {lab}: {c.name}: claim {c.claim:.6g} {c.relation} measured {c.measured:.6g} ({c.detail})")
    gaps = [c.measured / c.claim for *_, r in rows for c in r.checks
            if c.name == "work_conserving_rate" and c.relation == "<=" and c.claim > 0]
    if gaps:
        print(f"work-conserving upper bounds (caps): measured/claim min {min(gaps):.3f}, median "
              f"{float(np.median(gaps)):.3f} over {len(gaps)} models")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
