"""The network model: [workflows.*] TOML, validation, the class-level form, networkx view."""
from __future__ import annotations

import itertools
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fluidllm as F
from fluidllm.model import Call, Independent, NetworkModel, Workflow
from fluidllm.model.lengths import Deterministic, Poisson

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "networks"
RS_RATE = 0.9 * 768 / 608 * 1000  # req/s: 0.9·b_max/(608 tokens) per ms

ENGINES = """
[engines.e1]
token_budget = 512
batch_time = { kind = "constant", c_ms = 1 }
[engines.e2]
token_budget = 512
batch_time = { kind = "constant", c_ms = 1 }
"""
LAW = 'prefill = { kind = "deterministic", value = 8 }\ndecode = { kind = "deterministic", value = 2 }\n'


def net(calls: str, head: str = "", engines: str = ENGINES) -> str:
    """A model text: two engines and workflow W with the given calls (each ``id = ...`` block)."""
    out = engines + '[workflows.W]\narrival = { kind = "poisson", rate_per_s = 2.0 }\n' + head
    for block in calls.strip().split("\n\n"):
        out += "[[workflows.W.calls]]\n" + block.strip() + "\n"
        if "engine" not in block:
            out += 'engine = "e1"\n'
        if "prefill" not in block:
            out += LAW
    return out


def rates(m: NetworkModel) -> dict[str, float]:
    cn = m.class_network()
    return dict(zip(cn.class_names, cn.visit_rates.tolist()))


# ----------------------------------------------------------------------------- examples


def test_every_example_loads_and_round_trips(tmp_path) -> None:
    files = sorted(EXAMPLES.glob("*.toml"))
    assert {f.name for f in files} >= {"dag.toml", "fork_join.toml", "rybko_stolyar.toml",
                                        "rybko_stolyar_stable.toml", "replicas_jsq.toml"}
    for f in files:
        m = F.load_model(f)
        assert isinstance(m, F.NetworkModel), f
        assert F.loads_model(F.dumps_model(m)) == m
        F.save_model(m, tmp_path / f.name)
        assert F.load_model(tmp_path / f.name) == m
        assert isinstance(m.class_network(), F.ClassNetwork)


def test_single_engine_models_stay_models() -> None:
    text = ENGINES + '[workloads.chat]\narrival = { kind = "poisson", rate_per_s = 1.0 }\nengine = "e1"\n' + LAW
    assert type(F.loads_model(text)) is F.Model


def test_dag_example_visit_rates() -> None:
    r = rates(F.load_model(EXAMPLES / "dag.toml"))
    assert r == pytest.approx({"agent.plan": 2.0, "agent.act": 1.4, "agent.reply": 0.6})


def test_fork_join_example_visit_rates_and_routing() -> None:
    m = F.load_model(EXAMPLES / "fork_join.toml")
    cn = m.class_network()
    r = dict(zip(cn.class_names, cn.visit_rates))
    assert r == pytest.approx({"research.plan": 1.5, "research.web": 1.5, "research.docs": 1.5,
                               "research.synthesize": 1.5 / 0.8, "research.check": 1.5 / 0.8})
    P = cn.routing
    i = cn.index
    assert P[i("research.plan")].sum() == 2.0  # a fork: two successors with probability 1 each
    assert P[i("research.web"), i("research.synthesize")] == 1.0  # the join's first input feeds it
    assert P[i("research.docs"), i("research.synthesize")] == 0.0
    assert P[i("research.check"), i("research.synthesize")] == pytest.approx(0.2)
    assert cn.arrival_rates.tolist() == [1.5, 0, 0, 0, 0]


def test_rybko_stolyar_examples() -> None:
    unstable = F.load_model(EXAMPLES / "rybko_stolyar.toml")
    stable = F.load_model(EXAMPLES / "rybko_stolyar_stable.toml")
    for m in (unstable, stable):
        cn = m.class_network()
        assert cn.visit_rates == pytest.approx([RS_RATE] * 4)
        for e in ("e1", "e2"):
            eng = m.engines[e]
            assert eng.token_budget == 768 and eng.batch_time.tokens_ms(768) == 1.0
            tokens_per_s = sum(lam * c.mean_tokens for lam, c in zip(cn.visit_rates, cn.classes) if c.engines == (e,))
            assert tokens_per_s / (768 * 1000) == pytest.approx(0.9)
    # priority to the class that leaves through the engine (unstable), and the reverse (stable)
    assert unstable.engines["e1"].policy.flag("order") == ["B.long", "A.short"]
    assert unstable.engines["e2"].policy.flag("order") == ["A.long", "B.short"]
    assert stable.engines["e1"].policy.flag("order") == ["A.short", "B.long"]
    assert unstable.engines["e1"].policy.flag("inner") == "kfcfs"
    assert unstable.workflows["A"].call("long").lengths.mean_prefill == 512


def test_replica_set_example() -> None:
    m = F.load_model(EXAMPLES / "replicas_jsq.toml")
    (c,) = m.class_network().classes
    assert c.engines == ("g0", "g1", "g2", "g3") and c.routing == "jsq-tokens" and c.name == "chat.answer"


# ----------------------------------------------------------------------------- semantics → P


def test_nested_loops_and_branch_join() -> None:
    m = F.loads_model(net('''
id = "a"

id = "b"
after = ["a"]
loop = { to = "a", p = 0.5 }

id = "c"
after = ["b"]
loop = { to = "a", p = 0.2 }
'''))
    # each pass a→b→c leaves with probability 0.5·0.8 = 0.4: 2.5 passes through a and b, 1.25 through c
    assert rates(m) == pytest.approx({"W.a": 5.0, "W.b": 5.0, "W.c": 2.5})
    m = F.loads_model(net('''
id = "a"

id = "b"
after = ["a"]
p = 0.4

id = "c"
after = ["a"]
p = 0.6

id = "x"
after = ["a"]

id = "b1"
after = ["b"]

id = "b2"
after = ["b"]

id = "j"
after = ["b1", "b2"]
'''))
    r = rates(m)
    assert r["W.j"] == pytest.approx(0.8) and r["W.x"] == pytest.approx(2.0) and r["W.c"] == pytest.approx(1.2)
    cn = m.class_network()
    assert cn.routing[cn.index("W.a")].sum() == pytest.approx(2.0)  # x always, plus one of b, c


def test_start_branch_and_parallel_starts() -> None:
    m = F.loads_model(net('''
id = "a"
p = 0.25

id = "b"
p = 0.75

id = "c"

id = "d"

id = "j"
after = ["c", "d"]
'''))
    assert rates(m) == pytest.approx({"W.a": 0.5, "W.b": 1.5, "W.c": 2.0, "W.d": 2.0, "W.j": 2.0})
    assert m.to_networkx().nodes["W.a"]["start_p"] == 0.25


def test_to_networkx_structure() -> None:
    m = F.load_model(EXAMPLES / "fork_join.toml")
    g = m.to_networkx()
    assert isinstance(g, nx.DiGraph)
    assert set(g) == {f"research.{c}" for c in ("plan", "web", "docs", "synthesize", "check")}
    kinds = {(u.split(".")[1], v.split(".")[1]): d["kind"] for u, v, d in g.edges(data=True)}
    assert kinds == {("plan", "web"): "fork", ("plan", "docs"): "fork", ("web", "synthesize"): "next",
                     ("docs", "synthesize"): "join", ("synthesize", "check"): "next", ("check", "synthesize"): "loop"}
    assert g.edges["research.check", "research.synthesize"]["p"] == pytest.approx(0.2)
    node = g.nodes["research.web"]
    assert node["engines"] == ("e2",) and node["mean_prefill"] == 1024 and node["workflow"] == "research"
    assert g.nodes["research.synthesize"]["join"] and g.graph["rates_per_s"] == {"research": 1.5}
    d = F.load_model(EXAMPLES / "dag.toml").to_networkx("agent")
    assert d.edges["agent.plan", "agent.act"] == {"kind": "branch", "p": 0.7}
    with pytest.raises(F.ModelError, match="workflow"):
        m.to_networkx("nope")


def test_scaled_and_mixed_workloads() -> None:
    text = net('id = "a"\n\nid = "b"\nafter = ["a"]\nengine = "e2"') + (
        '[workloads.plain]\narrival = { kind = "poisson", rate_per_s = 3.0 }\nengine = "e2"\n' + LAW)
    m = F.loads_model(text)
    assert rates(m) == pytest.approx({"W.a": 2.0, "W.b": 2.0, "plain": 3.0})
    assert rates(m.scaled(0.5)) == pytest.approx({"W.a": 1.0, "W.b": 1.0, "plain": 1.5})
    assert F.loads_model(F.dumps_model(m)) == m
    assert m.with_engine("e1", token_budget=64).engines["e1"].token_budget == 64


def test_inherits_kv_allows_zero_prefill_and_round_trips() -> None:
    text = net('''
id = "prefill"
decode = { kind = "deterministic", value = 0 }
prefill = { kind = "poisson", mean = 512 }

id = "decode"
engine = "e2"
after = ["prefill"]
inherits_kv = true
prefill = { kind = "deterministic", value = 0 }
decode = { kind = "geometric", mean = 100 }
''')
    m = F.loads_model(text)
    assert m.workflows["W"].call("decode").inherits_kv
    assert F.loads_model(F.dumps_model(m)) == m
    with pytest.raises(F.ModelError) as e:
        F.loads_model(text.replace("inherits_kv = true\n", ""))
    assert e.value.field == "workflows.W.calls.decode.prefill"


def test_weighted_replica_set_round_trips() -> None:
    m = F.loads_model(net('id = "a"\nengine = ["e1", "e2"]\nrouting = "weighted"\nweights = [1.0, 3.0]'))
    c = m.class_network().classes[0]
    assert c.routing == "weighted" and c.weights == (1.0, 3.0)
    assert F.loads_model(F.dumps_model(m)) == m


def test_python_construction() -> None:
    law = Independent(Poisson(32), Poisson(32))
    wf = Workflow("A", F.PoissonArrival(1.0), (Call("x", "e1", law), Call("y", ("e1", "e2"), law, after=("x",))))
    m = NetworkModel({"e1": F.Engine("e1", 64, F.Constant(1.0)), "e2": F.Engine("e2", 64, F.Constant(1.0))}, {"A": wf})
    assert m.workflows["A"].call("y").routing == "jsq-tokens"
    assert rates(m) == pytest.approx({"A.x": 1.0, "A.y": 1.0})
    assert m.to_dict()["workflows"]["A"]["calls"][1]["engine"] == ["e1", "e2"]
    one = NetworkModel({"e1": F.Engine("e1", 64, F.Constant(1.0))},
                       {"A": Workflow("A", F.PoissonArrival(1.0), (Call("x", (), law),))})
    assert one.workflows["A"].call("x").engines == ("e1",)


# ----------------------------------------------------------------------------- validation

BAD = [
    ('id = "a"\nengine = "e9"', "", "workflows.W.calls.a.engine"),
    ('id = "a"\nengine = 3', "", "workflows.W.calls.a.engine"),
    ('id = "a"\n\nid = "b"\nafter = ["zz"]', "", "workflows.W.calls.b.after"),
    ('id = "a"\n\nid = "b"\nafter = "a"', "", "workflows.W.calls.b.after"),
    ('id = "a"\n\nid = "a"', "", "workflows.W.calls.a.id"),
    ('id = "a.b"', "", "workflows.W.calls.a.b.id"),
    ('engine = "e1"', "", "workflows.W.calls[0].id"),
    ('id = "a"\ncolour = "red"', "", "workflows.W.calls.a.colour"),
    ('id = "a"\n\nid = "b"\nafter = ["a"]\np = 0.5\n\nid = "c"\nafter = ["a"]\np = 0.4', "", "workflows.W.calls.b.p"),
    ('id = "a"\np = 0.5', "", "workflows.W.calls.a.p"),
    ('id = "a"\n\nid = "b"\nafter = ["a"]\np = 1.5', "", "workflows.W.calls.b.p"),
    ('id = "a"\n\nid = "b"\nafter = ["a"]\np = 0.0', "", "workflows.W.calls.b.p"),
    # a join of two alternatives of one branch: its inputs do not come from one fork
    ('id = "a"\n\nid = "b"\nafter = ["a"]\np = 0.5\n\nid = "c"\nafter = ["a"]\np = 0.5\n\nid = "j"\nafter = ["b", "c"]',
     "", "workflows.W.calls.j.after"),
    # a join of a call and its own descendant: a join without its fork
    ('id = "a"\n\nid = "b"\nafter = ["a"]\n\nid = "j"\nafter = ["a", "b"]', "", "workflows.W.calls.j.after"),
    ('id = "a"\n\nid = "b"\nafter = ["a"]\n\nid = "c"\nafter = ["a"]\n\nid = "j"\nafter = ["b", "c"]\np = 1.0',
     "", "workflows.W.calls.j.p"),
    ('id = "a"\n\nid = "b"\nafter = ["a"]\nloop = { to = "a", p = 0.5 }', "acyclic = true\n",
     "workflows.W.calls.b.loop"),
    ('id = "a"\n\nid = "b"\nafter = ["a", "c"]\n\nid = "c"\nafter = ["b"]', "acyclic = true\n",
     "workflows.W.calls.b.after"),
    ('id = "a"\n\nid = "b"\nafter = ["a", "c"]\n\nid = "c"\nafter = ["b"]', "", "workflows.W.calls.b.after"),
    ('id = "a"\n\nid = "x"\nafter = ["y"]\n\nid = "y"\nafter = ["x"]', "", "workflows.W.calls.x"),
    ('id = "x"\nafter = ["y"]\n\nid = "y"\nafter = ["x"]', "", "workflows.W.calls"),
    ('id = "a"\nrouting = "jsq-tokens"', "", "workflows.W.calls.a.routing"),
    ('id = "a"\nengine = ["e1", "e2"]\nrouting = "magic"', "", "workflows.W.calls.a.routing"),
    ('id = "a"\nengine = ["e1", "e2"]\nrouting = "weighted"\nweights = [1.0]', "", "workflows.W.calls.a.weights"),
    ('id = "a"\nengine = ["e1", "e2"]\nrouting = "weighted"', "", "workflows.W.calls.a.weights"),
    ('id = "a"\nengine = ["e1", "e2"]\nweights = [1.0, 1.0]', "", "workflows.W.calls.a.weights"),
    ('id = "a"\nengine = ["e1", "e1"]', "", "workflows.W.calls.a.engine"),
    ('id = "a"\nloop = { to = "zz", p = 0.5 }', "", "workflows.W.calls.a.loop.to"),
    ('id = "a"\nloop = { to = "a", p = 1.0 }', "", "workflows.W.calls.a.loop.p"),
    ('id = "a"\nloop = { to = "a" }', "", "workflows.W.calls.a.loop.p"),
    ('id = "a"\n\nid = "b"\nafter = ["a"]\n\nid = "c"\nafter = ["a"]\nloop = { to = "b", p = 0.5 }',
     "", "workflows.W.calls.c.loop.to"),
    ('id = "a"\n\nid = "b"\nafter = ["a"]\n\nid = "c"\nafter = ["a"]\n\nid = "d"\nafter = ["b"]\n'
     'loop = { to = "a", p = 0.5 }', "", "workflows.W.calls.d.loop"),  # the body forks at a
    ('id = "a"\nprefill = { kind = "deterministic", value = 0 }\ndecode = { kind = "deterministic", value = 1 }',
     "", "workflows.W.calls.a.prefill"),
    ('id = "a"\nprefill = { kind = "nope" }\ndecode = { kind = "deterministic", value = 1 }',
     "", "workflows.W.calls.a.prefill.kind"),
    ('id = "a"', "speed = 3\n", "workflows.W.speed"),
]


@pytest.mark.parametrize("calls,head,field", BAD)
def test_bad_workflows_name_the_field(calls, head, field) -> None:
    with pytest.raises(F.ModelError) as e:
        F.loads_model(net(calls, head))
    assert e.value.field == field, str(e.value)


def test_bad_models_name_the_field() -> None:
    cases = [
        (ENGINES + '[workflows.W]\narrival = { kind = "poisson", rate_per_s = 1.0 }\ncalls = []\n',
         "workflows.W.calls"),
        (ENGINES + '[workflows.W]\n[[workflows.W.calls]]\nid = "a"\nengine = "e1"\n' + LAW, "workflows.W.arrival"),
        (net('id = "a"').replace('engine = "e1"\n', ""), "workflows.W.calls.a.engine"),  # two engines: must name one
        (net('id = "a"') + '[workloads.W]\narrival = { kind = "poisson", rate_per_s = 1.0 }\nengine = "e1"\n' + LAW,
         "workloads.W"),
        (net('id = "a"', "acyclic = 1\n"), "workflows.W.acyclic"),
        (net('id = "a"\ninherits_kv = "yes"'), "workflows.W.calls.a.inherits_kv"),
    ]
    for text, field in cases:
        with pytest.raises(F.ModelError) as e:
            F.loads_model(text)
        assert e.value.field == field, str(e.value)
    one = ENGINES.split("[engines.e2]")[0]
    m = F.loads_model(net('id = "a"', engines=one).replace('engine = "e1"\n', ""))
    assert m.workflows["W"].call("a").engines == ("e1",)


def test_error_messages_say_what_is_allowed() -> None:
    with pytest.raises(F.ModelError, match="sum"):
        F.loads_model(net(BAD[8][0]))
    with pytest.raises(F.ModelError, match="one fork"):
        F.loads_model(net(BAD[12][0]))
    with pytest.raises(F.ModelError, match="acyclic"):
        F.loads_model(net(BAD[15][0], BAD[15][1]))
    with pytest.raises(F.ModelError, match="unreachable"):
        F.loads_model(net(BAD[18][0]))


# ----------------------------------------------------------------------------- property: P vs the semantics


def executed_counts(calls: list[dict]) -> tuple[dict[str, float], bool]:
    """Expected executions per instance, by enumerating every branch choice and running the rules.

    An independent reading of the semantics: start calls / children without p start, one p-child per
    parent is chosen, a join runs when all its inputs ran. Returns (counts, valid): invalid when some
    join sees only part of its inputs in some outcome, or one input descends from another.
    """
    ids = [c["id"] for c in calls]
    by = {c["id"]: c for c in calls}
    parents = {"^"} | set(ids)
    groups = {a: [c["id"] for c in calls if c.get("p") is not None and (c["after"] or ["^"])[0] == a
                                                     and len(c["after"]) <= 1] for a in parents}
    groups = {a: g for a, g in groups.items() if g}
    valid = True

    def anc(x: str) -> set[str]:
        out, todo = set(), list(by[x]["after"])
        while todo:
            y = todo.pop()
            if y not in out:
                out.add(y)
                todo += by[y]["after"]
        return out

    for c in calls:
        if len(c["after"]) > 1 and any(a in anc(b) for a in c["after"] for b in c["after"]):
            valid = False
    counts = dict.fromkeys(ids, 0.0)
    keys = sorted(groups)
    for choice in itertools.product(*(groups[k] for k in keys)):
        pick = dict(zip(keys, choice))
        prob = float(np.prod([by[x]["p"] for x in choice]))
        ran: dict[str, bool] = {}
        for c in calls:  # file order is a topological order here
            a = c["after"]
            if len(a) <= 1:
                par = a[0] if a else "^"
                ran[c["id"]] = (par == "^" or ran[par]) and (c.get("p") is None or pick[par] == c["id"])
            else:
                got = [ran[x] for x in a]
                if any(got) and not all(got):
                    valid = False
                ran[c["id"]] = all(got)
        for x in ids:
            counts[x] += prob * ran[x] / (1 - by[x].get("q", 0.0))
    return counts, valid


@st.composite
def random_workflows(draw) -> list[dict]:
    n = draw(st.integers(1, 7))
    calls: list[dict] = []
    for i in range(n):
        kind = draw(st.sampled_from(["root", "single", "single", "single", "join"])) if i else "root"
        if kind == "root" or i == 0:
            after = []
        elif kind == "single" or i < 2:
            after = [f"c{draw(st.integers(0, i - 1))}"]
        else:
            after = [f"c{j}" for j in sorted(draw(st.sets(st.integers(0, i - 1), min_size=2, max_size=2)))]
        calls.append({"id": f"c{i}", "after": after, "p": None,
                      "q": draw(st.sampled_from([0.0, 0.0, 0.0, 0.5]))})
    # branches: among the single-parent children of each parent, some share p (integer weights)
    for par in ["^"] + [c["id"] for c in calls]:
        kids = [c for c in calls if len(c["after"]) <= 1 and (c["after"] or ["^"])[0] == par]
        chosen = [c for c in kids if draw(st.booleans())]
        if chosen:
            w = [draw(st.integers(1, 4)) for _ in chosen]
            for c, x in zip(chosen, w):
                c["p"] = x / sum(w)
    return calls


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_workflows())
def test_visit_rates_match_the_workflow_semantics(calls) -> None:
    law = Independent(Deterministic(4), Deterministic(1))
    built = [Call(c["id"], "e1", law, tuple(c["after"]), c["p"],
                  loop_to=c["id"] if c["q"] else None, loop_p=c["q"]) for c in calls]
    expected, valid = executed_counts(calls)
    try:
        wf = Workflow("W", F.PoissonArrival(3.0), tuple(built))
    except F.ModelError as e:
        assert not valid, f"rejected a valid workflow: {e}"
        return
    assert valid, "accepted a workflow whose join can see part of its inputs"
    m = NetworkModel({"e1": F.Engine("e1", 64, F.Constant(1.0))}, {"W": wf})
    r = rates(m)
    for cid, x in expected.items():
        assert r[f"W.{cid}"] == pytest.approx(3.0 * x, rel=1e-9, abs=1e-12)
    g = m.to_networkx()
    assert set(g) == {f"W.{c['id']}" for c in calls}
    assert all(d["p"] > 0 for _, _, d in g.edges(data=True))
