"""Theorem 10's region with k_max has vertex C = (29/46.75, 99/46.75) tokens/ms at b_max = 128, k_max = 100."""
CLAIM = "with b_max = b0 = 128 and k_max = 100 the (lambda_p, lambda_d) region has vertex C = (29, 99)/46.75 tok/ms, " \
        "and (290, 990)-token requests every 467.5 ms sit exactly on its boundary"
SOURCE = "Li, Dai, Peng arXiv 2504.07347 v3 §6, Thm 10 and Fig. 14"
METHOD = "LP"


def check():
    import numpy as np

    import fluidllm as fl

    e = fl.Engine("e", 128, fl.Staircase(11.28, 35.47, 128), max_batch_requests=100)
    reg = fl.token_region(e)
    want = np.array([29 / 46.75, 99 / 46.75]) * 1000
    has_c = any(np.allclose(v, want, rtol=1e-12) for v in reg.vertices_per_s)
    w = fl.Workload("w", fl.DeterministicArrival(1000 / 467.5),
                    fl.Independent(fl.Deterministic(290), fl.Deterministic(990)))
    c = fl.capacity(fl.Model({"e": e}, {"w": w}))
    on_boundary = abs(c.max_scale - 1.0) < 1e-7
    # the triangle lambda_p + lambda_d < mu* would wrongly admit (0, 2737.97) tokens/s: k_max cuts it
    cut = not reg.contains(0.0, 2700.0)
    detail = (f"vertices (tok/s) {np.round(reg.vertices_per_s, 3).tolist()}; max_scale at C = {c.max_scale:.9f}; "
              f"decode-only rate capped at {reg.vertices_per_s[:, 1].max():.3f} tok/s")
    return has_c and on_boundary and cut, detail
