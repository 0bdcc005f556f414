import sys

from . import run_all

results = run_all(sys.argv[1:] or None)
w = max(len(r.name) for r in results)
print(f"{'check':<{w}}  {'method':<10} {'verdict':<7} {'s':>6}  claim — source")
print("-" * (w + 80))
for r in results:
    print(f"{r.name:<{w}}  {r.method:<10} {'PASS' if r.ok else 'FAIL':<7} {r.seconds:>6.2f}  {r.claim} — {r.source}")
    print(f"{'':<{w}}  {r.detail}")
failed = [r.name for r in results if not r.ok]
print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
