"""Multiclass fluid model of batched networks (fluidllm.fluid.network) and its symbolic conditions
(fluidllm.capacity.network_symbolic): one engine, a tandem DAG, the Rybko–Stolyar network (v3 §5.4)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fluidllm import (Deterministic, Engine, Independent, Model, ModelError, PoissonArrival, PolicySpec, Staircase,
                      Workload)
from fluidllm.capacity.network_symbolic import network_conditions
from fluidllm.fluid import fluid_trajectory
from fluidllm.fluid.network import (engine_loads, network_fluid_trajectory, network_fluid_verdict,
                                    rybko_stolyar_network)
from fluidllm.model import ClassNetwork, JobClass
from fluidllm.model.batchtime import Constant

BT = Staircase(11.28, 35.47, 128)
MU = 512 / (11.28 + 4 * 35.47)                   # tokens/ms
EXIT = {"e1": ("priority", ["B.2", "A.1"]), "e2": ("priority", ["A.2", "B.1"])}     # priority to exiting classes
ENTRY = {"e1": ("priority", ["A.1", "B.2"]), "e2": ("priority", ["B.1", "A.2"])}    # the reverse
MAXW = {"e1": "max-weight", "e2": "max-weight"}


def test_one_engine_reproduces_the_single_engine_fluid() -> None:
    rate = 0.8 * MU * 1000 / 200                  # req/s at load 0.8 with (100, 100) tokens
    e = Engine("gpu0", 512, BT, policy=PolicySpec("kfcfs"))
    m = Model({"gpu0": e}, {"chat": Workload("chat", PoissonArrival(rate), Independent(Deterministic(100),
                                                                                        Deterministic(100)))})
    ref = fluid_trajectory(m, initial_tokens=(5000, 0), horizon_s=20, points=41)   # W0 = 10 000 tokens
    cn = ClassNetwork({"gpu0": e}, (JobClass("chat", "gpu0", 100, 100),), np.array([rate]), np.zeros((1, 1)))
    tr = network_fluid_trajectory(cn, initial_tokens=[10_000.0], horizon_s=20, points=41)
    assert np.allclose(tr.total, ref.total, rtol=0, atol=1e-5 * 10_000)
    assert tr.drain_time_s == pytest.approx(ref.drain_time_ms / 1000, rel=1e-3)
    assert tr.drain_time_s == pytest.approx(10_000 / (0.2 * MU) / 1000, rel=1e-3)
    assert np.allclose(tr.utilisation[0, 1:10], 1.0) and tr.utilisation[0, -1] == pytest.approx(0.8)


def _tandem(rho1: float, rho2: float) -> ClassNetwork:
    """c1 (100 + 100 tokens) on e1, then c2 (m2 tokens) on e2; μ_e = 512 tokens/ms."""
    E = {"e1": Engine("e1", 512, Constant(1.0)), "e2": Engine("e2", 512, Constant(1.0))}
    rate = rho1 * 512 / 200                                       # req/ms
    m2 = rho2 * 512 / rate
    cl = (JobClass("c1", "e1", 100, 100), JobClass("c2", "e2", m2 / 2, m2 / 2))
    return ClassNetwork(E, cl, np.array([rate * 1000, 0.0]), np.array([[0.0, 1.0], [0.0, 0.0]]))


def test_tandem_drains_at_the_right_time_below_capacity() -> None:
    cn = _tandem(0.9, 0.9)
    assert engine_loads(cn) == pytest.approx({"e1": 0.9, "e2": 0.9})
    # z2 = 1e5 alone: e1 passes its inflow through, e2 drains at μ − 0.9 μ
    tr = network_fluid_trajectory(cn, initial_tokens={"c2": 1e5}, horizon_s=5, points=101)
    assert tr.drain_time_s == pytest.approx(1e5 / (0.1 * 512) / 1000, rel=2e-3)
    # z1 = 1e5 alone (m1 = m2 here): e2 receives exactly μ while e1 drains, so the drain time is the same
    tr = network_fluid_trajectory(cn, initial_tokens={"c1": 1e5}, horizon_s=5, points=101)
    assert tr.drain_time_s == pytest.approx(1e5 / (0.1 * 512) / 1000, rel=2e-3)
    v = network_fluid_verdict(cn)
    assert v.verdict == "DRAINS" and v.drain_time_s is not None


@pytest.mark.parametrize("rho1,rho2,bottleneck", [(0.5, 1.1, "e2"), (1.1, 0.5, "e1")])
def test_tandem_diverges_at_the_bottleneck_slope(rho1, rho2, bottleneck) -> None:
    cn = _tandem(rho1, rho2)
    expected = (max(rho1, rho2) - 1.0) * 512 * 1000                 # offered − μ at the bottleneck, tokens/s
    tr = network_fluid_trajectory(cn, initial_tokens={"c1": 1e4, "c2": 1e4}, horizon_s=5, points=101)
    assert tr.drain_time_s is None
    assert tr.slope_tokens_per_s() == pytest.approx(expected, rel=1e-3)
    v = network_fluid_verdict(cn, initial="uniform")
    assert v.verdict == "DIVERGES"
    # the verdict measures work still to be served (class-1 tokens also owe their class-2 call)
    w1 = 1.0 + cn.classes[1].mean_tokens / cn.classes[0].mean_tokens
    assert v.growth_rate_tokens_per_s == pytest.approx(expected * (w1 if bottleneck == "e1" else 1.0), rel=1e-2)


def test_rybko_stolyar_verdicts_at_load_0_9() -> None:
    cn = rybko_stolyar_network(0.9)
    assert engine_loads(cn) == pytest.approx({"e1": 0.9, "e2": 0.9})
    exit_ = network_fluid_verdict(cn, EXIT)
    assert exit_.verdict == "DIVERGES" and exit_.growth_rate_tokens_per_s > 0
    assert exit_.runs["uniform"][0] != "DIVERGES"      # a symmetric start hides the instability
    assert network_fluid_verdict(cn, ENTRY).verdict == "DRAINS"
    assert network_fluid_verdict(cn, MAXW).verdict == "DRAINS"
    assert network_fluid_verdict(cn).verdict == "DRAINS"          # K-FCFS (FIFO fluid) drains here
    json.dumps(exit_.to_dict())


def test_virtual_station_condition_symbolic() -> None:
    cn = rybko_stolyar_network(0.9)
    c = network_conditions(cn, EXIT)
    assert len(c.virtual_stations) == 1 and set(c.virtual_stations[0].classes) == {"A.2", "B.2"}
    ev = c.evaluate()
    assert ev["engine_loads"] == pytest.approx({"e1": 0.9, "e2": 0.9}) and ev["engines_ok"]
    assert list(ev["virtual_stations"].values())[0] == pytest.approx(2 * 0.9 * 544 / 608)   # 1.6105
    assert not ev["holds"]
    assert network_conditions(cn, ENTRY).virtual_stations == () and network_conditions(cn, ENTRY).holds()
    boundary = 0.9 * c.max_load()["virtual[B.2+A.2]"]
    assert boundary == pytest.approx(608 / 1088)
    # the condition is a sympy relation in the exogenous rates
    a = c.alpha
    assert bool(c.virtual_stations[0].condition.subs({a["A.1"]: 0, a["A.2"]: 0, a["B.1"]: 0, a["B.2"]: 0}))


def test_fluid_verdict_flips_at_the_virtual_station_boundary() -> None:
    boundary = 608 / 1088                          # ρ_e where λ m_A2/μ_2 + λ m_B2/μ_1 = 1 (0.5588)
    step = 0.01
    loads = [0.545, 0.555, 0.565, 0.575]
    verdicts = [network_fluid_verdict(rybko_stolyar_network(r), EXIT, initial="A.1").verdict for r in loads]
    stable = [v in ("DRAINS", "CONTRACTS") for v in verdicts]
    assert verdicts[-1] == "DIVERGES" and stable[0]
    flip = next(i for i, s in enumerate(stable) if not s)
    assert all(stable[:flip]) and not any(stable[flip:])
    assert loads[flip - 1] < boundary < loads[flip] and loads[flip] - loads[flip - 1] <= step + 1e-12


def test_replica_set_jsq_and_policies_validation() -> None:
    E = {"e1": Engine("e1", 512, Constant(1.0)), "e2": Engine("e2", 512, Constant(1.0))}
    cl = (JobClass("w", ("e1", "e2"), 100, 100, routing="jsq-tokens"),)
    cn = ClassNetwork(E, cl, np.array([0.9 * 1024 / 200 * 1000]), np.zeros((1, 1)))
    c = network_conditions(cn)
    assert c.evaluate()["engine_loads"] == pytest.approx({"pool:e1+e2": 0.9})
    tr = network_fluid_trajectory(cn, initial_tokens=[1e5], horizon_s=3, points=31)
    assert tr.drain_time_s == pytest.approx(1e5 / (0.1 * 1024) / 1000, rel=2e-3)
    with pytest.raises(ModelError, match="policies"):
        network_fluid_trajectory(cn, {"e9": "kfcfs"}, horizon_s=1)
    with pytest.raises(ModelError, match="priority"):
        network_fluid_trajectory(cn, {"e1": "lifo"}, horizon_s=1)
    with pytest.raises(ModelError, match="order"):
        network_fluid_trajectory(rybko_stolyar_network(), {"e1": ("priority", ["A.2"])}, horizon_s=1)


def test_kfcfs_is_fifo_across_classes_and_proportional_is_not() -> None:
    """Class a's initial content is older than every class-b arrival: K-FCFS serves it at the full
    μ = 512 tokens/ms; head-of-line proportional sharing gives b a share and a drains later."""
    E = {"e1": Engine("e1", 512, Constant(1.0))}
    cl = (JobClass("a", "e1", 50, 50), JobClass("b", "e1", 50, 50))
    cn = ClassNetwork(E, cl, np.array([0.0, 0.5 * 512 / 100 * 1000]), np.zeros((2, 2)))
    fifo = network_fluid_trajectory(cn, initial_tokens={"a": 1e4}, horizon_s=0.1, points=201)
    prop = network_fluid_trajectory(cn, {"e1": "proportional"}, initial_tokens={"a": 1e4}, horizon_s=0.1, points=201)
    t_a = 1e4 / 512 / 1000                                              # s
    i = int(np.searchsorted(fifo.times_s, t_a * 1.01))
    assert fifo.backlog[0, i] == pytest.approx(0.0, abs=1e-6) and prop.backlog[0, i] > 100
    assert fifo.drain_time_s == pytest.approx(prop.drain_time_s, rel=1e-3)    # same total: both work-conserving
    assert fifo.drain_time_s == pytest.approx(1e4 / (0.5 * 512) / 1000, rel=2e-3)
