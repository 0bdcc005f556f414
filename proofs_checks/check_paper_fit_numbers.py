"""The paper's staircase numbers: t_128, t_512, t_1024 and b_max/t_bmax."""
CLAIM = "t_128 = 46.75, t_512 = 153.16, t_1024 = 295.04 ms; b/t_b = 2.737968, 3.342909, 3.470716 tok/ms; " \
        "lambda* = 16.71 req/s for (100, 100) tokens at b_max = 512"
SOURCE = "Li, Dai, Peng arXiv 2504.07347 v3, staircase fit and Thm 2 example"
METHOD = "numeric"


def check():
    import fluidllm as fl
    from fluidllm.presets import get_preset

    bt = get_preset("codellama-34b-a100")
    want = {128: (46.75, 2.737968), 512: (153.16, 3.342909), 1024: (295.04, 3.470716)}
    ok = True
    parts = []
    for b, (t, r) in want.items():
        tb = float(bt.tokens_ms(b))
        ok &= abs(tb - t) < 1e-9 and abs(b / tb - r) < 5e-7
        parts.append(f"t_{b} = {tb:.2f}")
    m = fl.Model({"e": fl.Engine("e", 512, bt)},
                 {"w": fl.Workload("w", fl.PoissonArrival(1.0),
                                   fl.Independent(fl.Deterministic(100), fl.Deterministic(100)))})
    lam = fl.capacity(m).workloads["w"].max_rate_per_s
    ok &= abs(lam - 16.71) < 0.005
    return ok, ", ".join(parts) + f"; lambda* = {lam:.4f} req/s"
