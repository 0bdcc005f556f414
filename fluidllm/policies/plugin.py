"""User scheduling policies (plug-ins): the contract, loading a target, and calling it safely.

The contract (``../shared/design.md``, "Plug-in policies"): a policy is an object with a ``name``
and ``plan(view) -> {request_id: (prefill_tokens, decode_tokens)}``. ``view`` is a read-only
:class:`View` — ``token_budget``, ``max_batch_requests``, ``kv_capacity_tokens`` (plus
``kv_free_tokens``, ``max_resident_requests``) and ``requests``, the resident requests in FCFS order,
each a :class:`RequestView` with ``id``, ``prefill_left``, ``decode_left``, ``klass``,
``arrival_index`` (and ``running``, ``decoding``, ``kv_tokens`` — the KV cache it holds). Requests left out of the plan get nothing in
this batch. The engine, not the policy, checks every plan (:func:`fluidllm.sim.reference.check_plan`):
at most ``token_budget`` tokens, one decode token per request, no decode before the prompt is done,
and so on; a broken plan raises :class:`PlanViolation` naming the rule.

Optional attributes a policy may declare:

* ``work_conserving: bool`` — its claim; ``fluidllm.testing.check_work_conserving`` tests it.
* ``plan_vectorized(B, state) -> (prefill, decode)`` — the same rule over (R, W) slot arrays
  (:class:`~fluidllm.policies.rules.SlotState`, backend ``B``); the vectorized simulator then runs it
  instead of calling ``plan`` replication by replication, and ``fluidllm.testing.check_matches``
  checks that the two agree.

A model names a plug-in as ``policy = { kind = "python", target = "path/to/file.py:ClassName" }``
(a path relative to the model file, or absolute) or ``target = "package.module:ClassName"``, with
optional ``params = { ... }`` passed to the class as keyword arguments.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

from ..errors import ModelError
from ..model.policy import PolicySpec
from ..sim.reference import PlanViolation, RequestView, View, check_plan

__all__ = ["Policy", "View", "RequestView", "PlanViolation", "load_policy", "policy_object", "plan_with",
           "declared_work_conserving"]

Plan = dict[int, tuple[int, int]]


@runtime_checkable
class Policy(Protocol):
    """What a plug-in policy provides (see the module docstring)."""

    name: str

    def plan(self, view: View) -> Mapping[int, tuple[int, int]]:  # pragma: no cover - protocol
        ...


_CACHE: dict[tuple[str, str, str], Any] = {}


def _load_attr(target: str) -> Any:
    if not isinstance(target, str) or ":" not in target:
        raise ModelError("policy.target", target, "must be 'path/to/file.py:ClassName' or 'module:ClassName'")
    where, attr = target.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ModelError("policy.target", target, f"no such file: {path}")
        text = path.read_bytes()
        # one module per file content: editing the file and loading it again gives the new code
        modname = "fluidllm_plugin_" + hashlib.sha1(str(path).encode() + text).hexdigest()[:16]
        mod = sys.modules.get(modname)
        if mod is None:
            spec = importlib.util.spec_from_file_location(modname, path)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            sys.modules[modname] = mod
            try:
                spec.loader.exec_module(mod)
            except Exception as e:
                del sys.modules[modname]
                raise ModelError("policy.target", target, f"importing {path} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            mod = importlib.import_module(where)
        except ImportError as e:
            raise ModelError("policy.target", target, f"module {where!r} cannot be imported: {e}") from e
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError("policy.target", target, f"{where} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def load_policy(target: str, params: Mapping[str, Any] | None = None) -> Any:
    """The policy object named by ``target`` (``file.py:Name`` or ``module:Name``).

    A class (or any callable that is not itself a policy) is called with ``params`` as keyword
    arguments; an object that already has ``plan`` is used as is (``params`` must then be empty).

    Raises:
        ModelError: the file or module cannot be loaded, the name is missing, construction fails,
            or the result lacks ``name`` or a callable ``plan`` (field ``policy.target``).
    """
    params = dict(params or {})
    obj = _load_attr(target)
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "plan")):
        try:
            obj = obj(**params)
        except Exception as e:
            raise ModelError("policy.params", params, f"constructing {target} failed: {type(e).__name__}: {e}") from e
    elif params:
        raise ModelError("policy.params", params, f"{target} is an object, not a class: it takes no params")
    if not callable(getattr(obj, "plan", None)) or not isinstance(getattr(obj, "name", None), str):
        raise ModelError("policy.target", target, "must give an object with a str `name` and a `plan(view)` method")
    return obj


def policy_object(spec: PolicySpec) -> Any:
    """The plug-in object of a ``python`` :class:`PolicySpec` (loaded once per target and params)."""
    if spec.name != "python":
        raise ModelError("policy", spec.name, "is a built-in policy, not a python plug-in")
    params = spec.options.get("params", {})
    key = (spec.options["target"], repr(sorted(params.items())), "")
    if key not in _CACHE:
        _CACHE[key] = load_policy(spec.options["target"], params)
    return _CACHE[key]


def declared_work_conserving(policy: Any) -> bool | None:
    """The policy's own claim (``work_conserving`` attribute), or None when it makes none."""
    v = getattr(policy, "work_conserving", None)
    return None if v is None else bool(v)


def plan_with(policy: Any, view: View, where: str = "") -> Plan:
    """Call ``policy.plan(view)`` and check the plan against the model's rules.

    Raises:
        PlanViolation: the plan breaks a rule, or ``plan`` raised or returned something that is not
            a mapping (the message names the policy and where).
    """
    name = getattr(policy, "name", type(policy).__name__)
    at = f"policy {name!r}" + (f", {where}" if where else "")
    try:
        out = policy.plan(view)
    except PlanViolation:
        raise
    except Exception as e:
        raise PlanViolation(f"{at}: plan(view) raised {type(e).__name__}: {e}") from e
    if not isinstance(out, Mapping):
        raise PlanViolation(f"{at}: plan(view) returned {type(out).__name__}, not a mapping id -> (prefill, decode)")
    plan = {k: (tuple(v) if isinstance(v, list) else v) for k, v in out.items()}
    check_plan(view, plan, at)
    return {int(k): (int(v[0]), int(v[1])) for k, v in plan.items()}
