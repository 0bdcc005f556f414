# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Networks of LLM agents: the graphs, their capacity regions and the trajectories
#
# Li, Dai, Peng (arXiv 2504.07347 v3 §5): several engines, workflows that route each request
# through them (multi-step agents). The static planning LP gives the capacity region; for DAG and
# fork-join routing every work-conserving policy reaches it, but with cyclic routing a
# work-conserving policy can be unstable although every engine is below capacity — the
# Rybko–Stolyar network (§5.4) under priority to the classes that leave the network.
#
# 1. the five example networks of `examples/networks/` as workflow graphs;
# 2. their capacity (the network LP) and a 2-D slice of the Rybko–Stolyar region;
# 3. the fluid model of Rybko–Stolyar under both priorities, and the virtual-station condition;
# 4. the reference simulator beside the fluid, and end-to-end latency of the fork-join agent.
#
# Every assertion compares with the theory (closed forms from the model's parameters), never with
# numbers of a previous run. Figures go to `FLUIDLLM_OUT` (default `notebooks/out/`);
# `FLUIDLLM_QUICK=1` runs short simulations (the test suite does).

# %%
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import networkx as nx
import numpy as np

import fluidllm as fl
from fluidllm.capacity import max_token_rate
from fluidllm.capacity.network import network_region_halfspaces, region_vertices
from fluidllm.capacity.network_symbolic import network_conditions
from fluidllm.fluid import fluid_policies_of, network_fluid_trajectory, network_fluid_verdict
from fluidllm.sim.network_reference import simulate_network_reference

OUT = Path(os.environ.get("FLUIDLLM_OUT", "notebooks/out"))
OUT.mkdir(parents=True, exist_ok=True)
QUICK = os.environ.get("FLUIDLLM_QUICK", "") not in ("", "0")
ROOT = Path.cwd() if (Path.cwd() / "examples").is_dir() else Path.cwd().parent
NAMES = ["dag", "fork_join", "replicas_jsq", "rybko_stolyar", "rybko_stolyar_stable"]
models = {n: fl.load_model(ROOT / "examples" / "networks" / f"{n}.toml") for n in NAMES}
for n, m in models.items():
    assert isinstance(m, fl.NetworkModel), n
    print(f"{n:22s} engines {list(m.engines)}  classes {m.class_names}")


def save(fig, name):
    fig.tight_layout()
    fig.savefig(OUT / f"{name}.png", dpi=110)
    plt.close(fig)


# %% [markdown]
# ## 1. The workflow graphs
#
# Nodes are the calls "W.call" (class names), coloured by engine; edges are `next`, `fork`
# (parallel children), `branch` (probability p), `join` (an input of a join besides its first)
# and `loop` (back with probability p).

# %%
EDGE_STYLE = {"next": dict(color="black", style="solid"), "fork": dict(color="tab:blue", style="solid"),
              "branch": dict(color="tab:green", style="solid"), "join": dict(color="tab:purple", style="dashed"),
              "loop": dict(color="tab:red", style="solid")}


def layout(g):
    """Layered left-to-right per workflow: x = depth in the DAG without loop edges, one band per workflow."""
    pos, band = {}, 0.0
    for w in sorted({d["workflow"] for _, d in g.nodes(data=True)}):
        sub = g.subgraph([v for v, d in g.nodes(data=True) if d["workflow"] == w]).copy()
        sub.remove_edges_from([(a, b) for a, b, d in sub.edges(data=True) if d["kind"] == "loop"])
        gens = list(nx.topological_generations(sub))
        height = max(len(gn) for gn in gens)
        for x, gn in enumerate(gens):
            for i, v in enumerate(sorted(gn)):
                pos[v] = (1.8 * x, band - i + (len(gn) - 1) / 2 - (height - 1) / 2)
        band -= height + 0.6
    return pos


def draw_network(ax, model, title):
    g = model.to_networkx()
    pos = layout(g)
    engines = list(model.engines)
    cmap = plt.get_cmap("tab10")
    ecol = {e: cmap(i) for i, e in enumerate(engines)}
    colors = [ecol[d["engines"][0]] if len(d["engines"]) == 1 else "lightgrey" for _, d in g.nodes(data=True)]
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colors, node_size=1400, alpha=0.35)
    labels = {v: f"{v}\n[{d['engines'][0] if len(d['engines']) == 1 else '|'.join(d['engines'])}]"
              + (f"\n{d['routing']}" if len(d["engines"]) > 1 else "") for v, d in g.nodes(data=True)}
    nx.draw_networkx_labels(g, pos, labels, ax=ax, font_size=7)
    for kind, st in EDGE_STYLE.items():
        es = [(a, b) for a, b, d in g.edges(data=True) if d["kind"] == kind]
        if es:
            nx.draw_networkx_edges(g, pos, edgelist=es, ax=ax, edge_color=st["color"], style=st["style"],
                                   node_size=1400, arrowsize=14,
                                   connectionstyle="arc3,rad=0.6" if kind == "loop" else "arc3,rad=0.0")
    for kind, rad in (("branch", 0.0), ("loop", 0.6)):
        el = {(a, b): f"{kind} p={d['p']:g}" for a, b, d in g.edges(data=True) if d["kind"] == kind}
        if el:
            nx.draw_networkx_edge_labels(g, pos, el, ax=ax, font_size=7, connectionstyle=f"arc3,rad={rad}")
    rates = ", ".join(f"{w}: {r:g}/s" for w, r in g.graph["rates_per_s"].items())
    pols = "; ".join(f"{e}: {' > '.join(p.flag('order'))}" for e, eng in model.engines.items()
                     if (p := eng.policy).name == "priority")
    ax.set_title(f"{title}\n({rates})" + (f"\npriority {pols}" if pols else ""), fontsize=9)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.axis("off")
    return g


fig, axes = plt.subplots(2, 3, figsize=(16, 8))
graphs = {n: draw_network(ax, models[n], n) for ax, n in zip(axes.flat, NAMES)}
handles = [plt.Line2D([], [], color=st["color"], ls="--" if st["style"] == "dashed" else "-", label=k)
           for k, st in EDGE_STYLE.items()]
handles += [plt.Line2D([], [], marker="o", ls="", ms=12, alpha=0.35, color=plt.get_cmap("tab10")(i),
                       label=f"engine {e}") for i, e in enumerate(("e1", "e2"))]
handles.append(plt.Line2D([], [], marker="o", ls="", ms=12, color="lightgrey", label="replica set (routing rule)"))
axes.flat[5].legend(handles=handles, loc="center", fontsize=10, title="edge kinds / node colours")
axes.flat[5].axis("off")
save(fig, "networks")

g = graphs["fork_join"]
kinds = {(a.split(".")[1], b.split(".")[1]): d["kind"] for a, b, d in g.edges(data=True)}
assert kinds[("plan", "web")] == kinds[("plan", "docs")] == "fork"
assert kinds[("docs", "synthesize")] == "join" and kinds[("check", "synthesize")] == "loop"
assert {d["kind"] for _, _, d in graphs["dag"].edges(data=True)} == {"branch"}
assert math.isclose(sum(d["p"] for _, _, d in graphs["dag"].edges(data=True)), 1.0)
for n in ("rybko_stolyar", "rybko_stolyar_stable"):   # two routes, each visiting both engines
    gr = graphs[n]
    assert [gr.nodes[f"A.{c}"]["engines"][0] for c in ("short", "long")] == ["e1", "e2"]
    assert [gr.nodes[f"B.{c}"]["engines"][0] for c in ("short", "long")] == ["e2", "e1"]

# %% [markdown]
# ## 2. Capacity: the network LP
#
# `fluidllm.capacity(model)` solves the static planning LP over the class-level form
# (visit rates λ = (I − Pᵀ)⁻¹α). θ* = max_scale: all rates × θ* lie on the region's boundary.
#
# Theory: an engine with a token-count batch time serves at most μ*_e = max n/t(n) tokens/s
# (Thm 2), and on token-budget engines the region is Σ_k λ_k m_k ≤ μ*_e per engine (pooled over a
# JSQ replica set), so θ* = min_e μ*_e / (offered token load of e); for the K-replica JSQ set,
# θ* = K μ* / offered.

# %%
caps = {}
for n, m in models.items():
    caps[n] = fl.capacity(m)
    print(f"==== {n}")
    print(caps[n].table())
    print()


def offered_tokens_per_s(model):
    """Σ_k λ_k (m_p,k + m_d,k) per engine (fixed engines only), from the class network."""
    cn = model.class_network()
    out = {e: 0.0 for e in cn.engines}
    for lam, c in zip(cn.visit_rates, cn.classes):
        for e in c.engines:
            out[e] += lam * c.mean_tokens / len(c.engines)
    return out


def mu_star(engine):
    return max_token_rate(engine.batch_time, engine.token_budget).tokens_per_s


for n in ("dag", "fork_join", "rybko_stolyar", "rybko_stolyar_stable"):
    m = models[n]
    off = offered_tokens_per_s(m)
    theory = min(mu_star(m.engines[e]) / off[e] for e in off if off[e] > 0)
    assert math.isclose(caps[n].max_scale, theory, rel_tol=1e-6), (n, caps[n].max_scale, theory)

# Rybko–Stolyar: each engine at load 0.9, θ* = 1/0.9 (both variants: the LP does not see the policy)
for n in ("rybko_stolyar", "rybko_stolyar_stable"):
    assert math.isclose(caps[n].max_scale, 1 / 0.9, rel_tol=1e-6), caps[n].max_scale
    assert all(math.isclose(ec.utilisation, 0.9, rel_tol=1e-6) for ec in caps[n].engines.values())

# K-replica JSQ: θ* = K μ* / offered
jsq = models["replicas_jsq"]
(call,) = jsq.workflows["chat"].calls
K = len(call.engines)
offered = jsq.workflows["chat"].rate_per_s * (call.lengths.mean_prefill + call.lengths.mean_decode)
theory_jsq = K * mu_star(jsq.engines[call.engines[0]]) / offered
print(f"JSQ: K = {K}, μ* = {mu_star(jsq.engines[call.engines[0]]):.2f} tok/s, offered = {offered:.1f} tok/s, "
      f"K μ*/offered = {theory_jsq:.5f}, LP θ* = {caps['replicas_jsq'].max_scale:.5f}")
assert math.isclose(caps["replicas_jsq"].max_scale, theory_jsq, rel_tol=1e-6)
assert set(caps["replicas_jsq"].bottlenecks) == set(call.engines)   # symmetric: every replica binds
assert math.isclose(sum(ec.elasticity for ec in caps["replicas_jsq"].engines.values()), 1.0, rel_tol=1e-6)

# %% [markdown]
# ### The Rybko–Stolyar region in the (rate of A, rate of B) plane
#
# With μ = b_max/t = 768 000 tokens/s per engine and each type putting 64 tokens on its first
# engine and 544 on the other, the region is {64 α_A + 544 α_B ≤ μ, 544 α_A + 64 α_B ≤ μ}:
# vertices (μ/544, 0), (μ/608, μ/608), (0, μ/544). Under priority to the exiting classes the
# virtual station {A.long, B.long} adds 544 (α_A + α_B) ≤ μ (Botvich–Zamyatin; Dai–Vande Vate):
# the stable region of that policy is only the triangle under the chord.

# %%
rs = models["rybko_stolyar"]
cn = rs.class_network()
reg = network_region_halfspaces(cn, workflows=["A", "B"])
V = region_vertices(reg)
print(reg.method, reg.rows)
print("vertices (req/s):\n", V.round(3))
mu = mu_star(rs.engines["e1"])
assert math.isclose(mu, 768 * 1000.0)
c_short = rs.workflows["A"].call("short").lengths
c_long = rs.workflows["A"].call("long").lengths
m_short = c_short.mean_prefill + c_short.mean_decode
m_long = c_long.mean_prefill + c_long.mean_decode
expected_V = np.array([[0, 0], [mu / m_long, 0], [mu / (m_short + m_long)] * 2, [0, mu / m_long]])
assert V.shape == expected_V.shape and np.allclose(V, expected_V, rtol=1e-9, atol=1e-6), V
current = np.array([rs.workflows["A"].rate_per_s, rs.workflows["B"].rate_per_s])
assert math.isclose(reg.max_scale(current), 1 / 0.9, rel_tol=1e-9)
assert reg.contains(current)

cond_exit = network_conditions(cn, fluid_policies_of(rs))
cond_enter = network_conditions(models["rybko_stolyar_stable"].class_network(),
                                fluid_policies_of(models["rybko_stolyar_stable"]))
ev_exit, ev_enter = cond_exit.evaluate(), cond_enter.evaluate()
print("exit priority:", ev_exit)
print("enter priority:", ev_enter)
(vs_name, vs_value), = ev_exit["virtual_stations"].items()
assert math.isclose(vs_value, 2 * m_long * 0.9 / (m_short + m_long), rel_tol=1e-9)   # = 1.6105
assert vs_value > 1 and not ev_exit["holds"] and ev_exit["engines_ok"]
assert ev_enter["virtual_stations"] == {} and ev_enter["holds"]


def vs_at(a, b):
    return cond_exit.evaluate({"A.short": a, "B.short": b})["virtual_stations"][vs_name]


# the virtual-station boundary in this plane (it is linear in the rates)
ca, cb = vs_at(1.0, 0.0), vs_at(0.0, 1.0)
assert math.isclose(ca, m_long / mu, rel_tol=1e-9) and math.isclose(cb, m_long / mu, rel_tol=1e-9)

fig, ax = plt.subplots(figsize=(5.8, 5.2))
ax.fill(V[:, 0], V[:, 1], color="tab:blue", alpha=0.15, label="capacity region (network LP)")
ax.plot(np.r_[V[:, 0], V[0, 0]], np.r_[V[:, 1], V[0, 1]], color="tab:blue")
tri = np.array([[0, 0], [1 / ca, 0], [0, 1 / cb]])
ax.fill(tri[:, 0], tri[:, 1], color="tab:red", alpha=0.15,
        label="stable under exit priority\n(+ virtual station A.long+B.long)")
ax.plot([1 / ca, 0], [0, 1 / cb], color="tab:red", ls="--")
ax.plot(*current, "k*", ms=14, label=f"current point ({current[0]:.0f}, {current[1]:.0f}) req/s\n"
        f"θ* = {caps['rybko_stolyar'].max_scale:.4f}, virtual station = {vs_value:.3f}")
ax.plot([0, current[0] / 0.9], [0, current[1] / 0.9], "k:", lw=1)
for v in V[1:]:
    ax.annotate(f"({v[0]:.0f}, {v[1]:.0f})", v, textcoords="offset points", xytext=(4, 4), fontsize=8)
ax.set_xlabel("rate of workflow A [req/s]")
ax.set_ylabel("rate of workflow B [req/s]")
ax.set_title("Rybko–Stolyar: capacity region vs. exit-priority stability")
ax.legend(fontsize=7, loc="upper right")
ax.set_xlim(0, 1.25 * V[:, 0].max())
ax.set_ylim(0, 1.25 * V[:, 1].max())
save(fig, "rybko_stolyar_region")

# %% [markdown]
# ## 3. The fluid model: exit priority diverges, entry priority drains
#
# At fluid scale each engine serves μ_e tokens/ms to its top-priority class holding fluid. The
# verdict runs several initial states (uniform, and all content in each class) and reports the
# worst; the virtual-station value 1.61 > 1 says exit priority cannot be fluid-stable.

# %%
variants = {"exit priority (rybko_stolyar)": models["rybko_stolyar"],
            "entry priority (rybko_stolyar_stable)": models["rybko_stolyar_stable"]}
verdicts = {}
for label, m in variants.items():
    verdicts[label] = network_fluid_verdict(m.class_network(), fluid_policies_of(m))
    print(label, verdicts[label])
v_exit, v_enter = verdicts.values()
assert v_exit.verdict == "DIVERGES" and v_exit.growth_rate_tokens_per_s > 0
assert v_enter.verdict == "DRAINS" and v_enter.drain_time_s is not None
for rho in (*v_exit.engine_loads.values(), *v_enter.engine_loads.values()):
    assert math.isclose(rho, 0.9, rel_tol=1e-9)

# Trajectories from the exit-priority verdict's worst state; horizon: 1.5 × the entry-priority drain time
init = v_exit.worst_initial
W0 = 1.0e6
H = 1.5 * v_enter.drain_time_s
trajs = {label: network_fluid_trajectory(m.class_network(), fluid_policies_of(m), initial_tokens={init: W0},
                                         horizon_s=H, points=400)
         for label, m in variants.items()}
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, (label, tr) in zip(axes[:2], trajs.items()):
    for k, c in enumerate(tr.classes):
        ax.plot(tr.times_s, tr.backlog[k] / 1e6, label=c)
    ax.set_title(f"{label}\nfrom {W0:.0e} tokens in {init}", fontsize=9)
    ax.set_xlabel("time [s]")
    ax.set_ylabel("fluid backlog [M tokens]")
    ax.legend(fontsize=8)
for label, tr in trajs.items():
    axes[2].plot(tr.times_s, tr.total_work / 1e6, label=f"{label.split(' (')[0]}: {verdicts[label].verdict}")
axes[2].set_title("network workload W̃ = Σ z_k w_k / m_k", fontsize=9)
axes[2].set_xlabel("time [s]")
axes[2].set_ylabel("W̃ [M tokens]")
axes[2].legend(fontsize=8)
save(fig, "rybko_stolyar_fluid")
tr_exit, tr_enter = trajs.values()
assert tr_exit.total_work[-1] > 2 * tr_exit.total_work[0]
assert tr_enter.drain_time_s is not None and tr_enter.total_work[-1] < 1e-3 * tr_enter.total_work[0]

# %% [markdown]
# ## 4. Simulation beside the fluid
#
# The reference simulator starts empty. Exit priority: the fluid from an empty network is not
# unique (0 is an unstable equilibrium); from any small asymmetric seed it grows linearly (the
# fluid is scale-invariant), and noise provides the seed. So the fluid prediction drawn is the one
# from a tiny seed (1 token in the worst class), in requests Σ_k z_k / m_k: its slope is the
# growth rate the simulation should follow (the simulation sits above it by the O(1) population
# that a stable network also holds, about the entry-priority level). Entry priority: the fluid
# stays at 0, the simulation at O(1) requests.

# %%
horizon = 1000.0 if QUICK else 3000.0
ts = np.linspace(0.0, horizon, 201)
runs, fluid_req = {}, {}
for seed, (label, m) in enumerate(variants.items(), start=1):
    runs[label] = simulate_network_reference(m, horizon, seed)
    print(label, runs[label])
    c = m.class_network()
    mk = np.array([k.mean_tokens for k in c.classes])
    tr = network_fluid_trajectory(c, fluid_policies_of(m), initial_tokens={init: 1.0}, horizon_s=horizon / 1000,
                                  points=ts.size)
    fluid_req[label] = (tr.backlog / mk[:, None]).sum(0)
n_exit, n_enter = (runs[lb].requests_in_system(ts) for lb in variants)

fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for ax, (label, n) in zip(axes, zip(variants, (n_exit, n_enter))):
    ax.plot(ts, n, label="simulation (reference)")
    ax.plot(ts, fluid_req[label], "--", label="fluid (from a 1-token seed)")
    ax.set_title(label, fontsize=9)
    ax.set_xlabel("time [ms]")
    ax.set_ylabel("requests in system")
    ax.legend(fontsize=8)
save(fig, "rybko_stolyar_sim")

# exit priority grows: the window means rise in every window of the second half
half = ts >= horizon / 2
windows = np.array_split(n_exit[half], 5)
means = [w.mean() for w in windows]
print("exit priority, second-half window means:", np.round(means, 1))
assert all(b > a for a, b in zip(means, means[1:])), means
# and at the fluid's rate: least-squares slopes over the second half (requests / ms)
slope_sim = np.polyfit(ts[half], n_exit[half], 1)[0]
slope_fluid = np.polyfit(ts[half], fluid_req[list(variants)[0]][half], 1)[0]
print(f"slopes (req/s): simulation {1000 * slope_sim:.0f}, fluid {1000 * slope_fluid:.0f}")
assert slope_fluid > 0 and abs(slope_sim / slope_fluid - 1) < 0.3
# entry priority stays bounded: no trend, and far below the exit-priority population at the end
slope_enter = np.polyfit(ts[half], n_enter[half], 1)[0]
print(f"entry priority: second-half slope {1000 * slope_enter:.0f} req/s, max {n_enter[half].max()}, "
      f"exit priority at the end {n_exit[-1]}")
assert abs(slope_enter) < 0.15 * slope_fluid
assert n_enter[half].max() <= 1.5 * n_enter[~half].max()
assert np.all(fluid_req[list(variants)[1]][1:] < 1.0)

# %% [markdown]
# ### Fork-join: end-to-end latency of an agent
#
# The e1 calls of one instance (plan, then synthesize/check, looping) run one after another, and a
# request gets at most one decode token per batch, so an instance takes at least
# Σ_{its e1 calls} (v_d − 1) · t_e1(1) ms: the decode chain alone at the shortest batch time.

# %%
fj = models["fork_join"]
fj_horizon = 600_000.0 if QUICK else 3_600_000.0
run = simulate_network_reference(fj, fj_horizon, 7)
print(run)
done = ~np.isnan(run.instance_completion_ms)
e2e = run.e2e_ms
t1 = float(fj.engines["e1"].batch_time.tokens_ms(1))
e1 = run.engine == list(fj.engines).index("e1")
chain = np.bincount(run.instance[e1], weights=np.maximum(run.decode[e1] - 1, 0), minlength=run.n_instances)
bound = chain[done] * t1
assert e2e.size == done.sum() and np.all(e2e >= bound - 1e-6), (e2e - bound).min()
# visits per instance: plan 1, web 1, docs 1, synthesize and check 1/(1 − 0.2) = 1.25 (geometric loop)
fin = run.visits[done]
ci = {c: i for i, c in enumerate(run.class_names)}
mean_syn = fin[:, ci["research.synthesize"]].mean()
se = fin[:, ci["research.synthesize"]].std() / math.sqrt(fin.shape[0])
print(f"completed instances {done.sum()} of {run.n_instances}; synthesize visits {mean_syn:.3f} ± {se:.3f} "
      f"(theory 1.25); e2e median {np.median(e2e) / 1000:.2f} s, p90 {np.percentile(e2e, 90) / 1000:.2f} s")
assert np.all(fin[:, ci["research.plan"]] == 1) and np.all(fin[:, ci["research.web"]] == 1)
assert abs(mean_syn - 1 / (1 - 0.2)) < 5 * se + 0.02

fig, ax = plt.subplots(figsize=(7, 4))
bins = np.linspace(0, e2e.max() / 1000, 41)
ax.hist(e2e / 1000, bins=bins, alpha=0.6, label=f"e2e ({done.sum()} instances)")
ax.hist(bound / 1000, bins=bins, histtype="step", color="k", label="lower bound Σ(v_d − 1)·t_e1(1)")
ax.axvline(np.median(e2e) / 1000, color="tab:red", ls="--", label=f"median {np.median(e2e) / 1000:.1f} s")
ax.set_xlabel("end-to-end latency per instance [s]")
ax.set_ylabel("instances")
ax.set_title(f"fork_join: research agent at {fj.workflows['research'].rate_per_s:g}/s "
             f"(θ* = {caps['fork_join'].max_scale:.3f})", fontsize=9)
ax.legend(fontsize=8)
save(fig, "fork_join_e2e")
