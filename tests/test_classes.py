"""The class-level network form: traffic equation, validation."""
import numpy as np
import pytest

import fluidllm as fl
from fluidllm.model import ClassNetwork, JobClass
from fluidllm.model.batchtime import Constant

E = {"e1": fl.Engine("e1", 768, Constant(1.0)), "e2": fl.Engine("e2", 768, Constant(1.0))}


def rybko_stolyar(rate: float) -> ClassNetwork:
    cl = (JobClass("A.1", "e1", 32, 32, "A"), JobClass("A.2", "e2", 512, 32, "A"),
          JobClass("B.1", "e2", 32, 32, "B"), JobClass("B.2", "e1", 512, 32, "B"))
    P = np.zeros((4, 4))
    P[0, 1] = P[2, 3] = 1.0
    return ClassNetwork(E, cl, np.array([rate, 0, rate, 0]), P)


def test_traffic_equation_tandem_fork_and_feedback() -> None:
    n = rybko_stolyar(2.0)
    assert np.allclose(n.visit_rates, [2, 2, 2, 2]) and n.scaled(0.5).visit_rates[3] == 1.0
    # a fork creates two jobs; feedback with probability 0.25 visits 1/(1-0.25) times
    cl = (JobClass("W.a", "e1", 1, 1), JobClass("W.b", "e2", 1, 1), JobClass("W.c", ("e1", "e2"), 1, 1))
    P = np.array([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.25, 0.0, 0.0]])
    lam = ClassNetwork(E, cl, np.array([1.0, 0, 0]), P).visit_rates
    assert lam[0] == pytest.approx(1 / 0.75) and lam[1] == pytest.approx(lam[0]) and lam[2] == pytest.approx(lam[0])


@pytest.mark.parametrize("kwargs,field", [
    (dict(routing=np.array([[0.0, 1.0], [1.0, 0.0]])), "routing"),
    (dict(arrival_rates=np.array([-1.0, 0.0])), "arrival_rates"),
    (dict(classes=(JobClass("a", "e9", 1, 1), JobClass("b", "e1", 1, 1))), "classes.a.engines"),
])
def test_bad_networks_name_the_field(kwargs, field) -> None:
    args = dict(engines=E, classes=(JobClass("a", "e1", 1, 1), JobClass("b", "e2", 1, 1)),
                arrival_rates=np.array([1.0, 0.0]), routing=np.zeros((2, 2)))
    args.update(kwargs)
    with pytest.raises(fl.ModelError) as e:
        ClassNetwork(**args)
    assert e.value.field == field


def test_bad_job_classes() -> None:
    with pytest.raises(fl.ModelError, match="routing"):
        JobClass("a", ("e1", "e2"), 1, 1, routing="magic")
    with pytest.raises(fl.ModelError, match="weights"):
        JobClass("a", ("e1", "e2"), 1, 1, routing="weighted")
    with pytest.raises(fl.ModelError, match="repeat"):
        JobClass("a", ("e1", "e1"), 1, 1)
