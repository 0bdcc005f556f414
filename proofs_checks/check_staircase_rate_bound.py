"""For t(n) = c + a⌈n/b0⌉ with b0 | b_max, every b ≤ b_max has b/t_b ≤ b_max/t_bmax."""
import sympy as sp

CLAIM = "staircase: b/t_b <= b_max/t_bmax for all b <= b_max when b0 divides b_max (and not otherwise)"
SOURCE = "Li, Dai, Peng arXiv 2504.07347 v3, Thm 2 / staircase fit"
METHOD = "symbolic"


def check():
    c, a, b0, j, r = sp.symbols("c a b0 j r", positive=True)
    # Inside step j (n = (j-1)b0 + r, 0 < r <= b0) the rate n/(c + a j) is largest at r = b0 ...
    inside = sp.diff(((j - 1) * b0 + r) / (c + a * j), r)
    # ... and f(j) = j b0 / (c + a j) grows with j, so the last full step b_max = J b0 is best.
    across = sp.simplify(sp.diff(j * b0 / (c + a * j), j))
    ok_sym = bool(sp.simplify(inside).is_positive) and bool(across.is_positive)
    # numeric confirmation on the paper's fit and the stated counterexample
    from fluidllm import Staircase
    from fluidllm.capacity import max_token_rate

    bt = Staircase(11.28, 35.47, 128)
    ok_div = all(max_token_rate(bt, 128 * m).argmax_tokens == 128 * m for m in range(1, 17))
    counter = max_token_rate(bt, 130)
    ok_counter = counter.argmax_tokens == 128
    detail = (f"d/dr rate = {sp.simplify(inside)} > 0, d/dj f = {across} > 0; "
              f"b0 | b_max argmax = b_max for b_max = 128..2048; b_max = 130: argmax {counter.argmax_tokens}")
    return ok_sym and ok_div and ok_counter, detail
