import sys

from . import run_all, table

results = run_all(sys.argv[1:] or None)
print(table(results))
sys.exit(1 if any(not r.ok for r in results) else 0)
