"""Scheduling-policy specifications: a policy's name and its flags, validated.

The rules themselves live in :mod:`fluidllm.policies`; a model only names one. Conventions the
literature disagrees on are flags, never hidden choices (see ``../shared/design.md``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError, integer, require

__all__ = ["PolicySpec", "POLICIES", "CHOICES", "policy_from_toml"]

#: name -> (work_conserving, {flag: (type, default, description)})
_SPLIT = ("bool", False, "split a prompt longer than the token budget into budget-sized pieces "
          "(default: whole prompts only; a prompt that can never fit makes capacity zero)")
_CHUNK = ("int?", None, "largest prefill chunk per request per batch (tokens); default: the budget")
POLICIES: dict[str, tuple[bool, dict[str, tuple[str, Any, str]]]] = {
    "fastertransformer": (False, {"split_long_prompts": _SPLIT}),
    "fastertransformer-static": (False, {"split_long_prompts": _SPLIT}),
    "vllm": (False, {"split_long_prompts": _SPLIT}),
    "orca": (True, {"chunk_size": _CHUNK}),
    "sarathi": (True, {"chunk_size": _CHUNK}),
    "kfcfs": (True, {}),
    "vllm-v1": (True, {"chunk_size": _CHUNK,
                       "preemption": ("choice", "recompute", "what a request preempted for KV memory loses: "
                                      "recompute (its KV is dropped and rebuilt); the only mode modelled")}),
    "priority": (True, {"inner": ("str", "kfcfs", "the rule applied class by class"),
                        "order": ("list", [], "class names, highest priority first")}),
    # Max-pressure (Dai-Lin 2005) over the network's classes; not work-conserving: it may idle.
    "max-pressure": (False, {"inner": ("str", "kfcfs", "the rule applied class by class, highest pressure first")}),
    "wait": (False, {"thresholds": ("list", [], "per-class admission thresholds (Ao et al. 2025)")}),
    "nested-wait": (False, {"thresholds": ("list", [], "nested admission thresholds (Ao et al. 2025)")}),
    "python": (False, {"target": ("str", None, "path/to/file.py:Class or module:Class"),
                       "params": ("dict", {}, "keyword arguments for the plug-in class")}),
}


#: flags of type "choice": the values the simulator models. vLLM's other preemption mode, swap
#: (KV blocks copied to host memory, vLLM v0 ``preemption_mode="swap"``), is not modelled, so it is
#: refused rather than run as recompute.
CHOICES: dict[str, tuple[str, ...]] = {"preemption": ("recompute",)}


@dataclass(frozen=True)
class PolicySpec:
    """A policy name plus its flags (validated against :data:`POLICIES`)."""

    name: str = "sarathi"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(isinstance(self.name, str) and self.name in POLICIES, "policy", self.name,
                f"must be one of {sorted(POLICIES)}")
        flags = POLICIES[self.name][1]
        opts = dict(self.options)
        for k, v in opts.items():
            if k not in flags:
                raise ModelError(f"policy.{k}", v, f"is not a flag of {self.name}; allowed: {sorted(flags) or 'none'}")
            typ = flags[k][0]
            if typ == "bool":
                require(isinstance(v, bool), f"policy.{k}", v, "must be true or false")
            elif typ == "int?":
                if v is not None:
                    opts[k] = integer(v, f"policy.{k}", minimum=1)
            elif typ == "str":
                require(isinstance(v, str), f"policy.{k}", v, "must be a string")
            elif typ == "choice":
                allowed = CHOICES[k]
                require(isinstance(v, str) and v in allowed, f"policy.{k}", v,
                        f"must be one of {list(allowed)} (the modes the simulator models"
                        + ("; swap is not modelled" if k == "preemption" else "") + ")")
            elif typ == "dict":
                require(isinstance(v, dict), f"policy.{k}", v, "must be a table")
                opts[k] = dict(v)
            elif typ == "list":
                require(isinstance(v, list | tuple), f"policy.{k}", v, "must be a list")
                opts[k] = list(v)
        if self.name in ("priority", "max-pressure"):
            inner = opts.get("inner", "kfcfs")
            require(inner in POLICIES and inner not in ("priority", "max-pressure", "python"), "policy.inner", inner,
                    "must name a built-in policy other than priority and max-pressure")
        if self.name == "python":
            require(isinstance(opts.get("target"), str) and ":" in opts["target"], "policy.target",
                    opts.get("target"), "must be 'path/to/file.py:ClassName' or 'module:ClassName'")
        opts = {k: v for k, v in opts.items() if v is not None}  # None = the flag's default; TOML has no null
        object.__setattr__(self, "options", opts)

    @property
    def work_conserving(self) -> bool:
        """Whether the rule is work-conserving in the paper's sense (eqs. 8–9). Not with a
        ``chunk_size`` flag (one prompt of more than chunk_size tokens, alone, gets a part-empty
        batch; ``fluidllm.testing.check_work_conserving`` finds it). A ``python``
        plug-in is only if it declares ``work_conserving = True`` (its file is loaded to read it;
        ``fluidllm.testing.check_work_conserving`` tests the claim)."""
        if self.name == "python":
            from ..policies.plugin import declared_work_conserving, policy_object

            return bool(declared_work_conserving(policy_object(self)))
        if self.name == "priority":       # class by class with the inner rule: as work-conserving as it
            return PolicySpec(self.options.get("inner", "kfcfs")).work_conserving
        # a prefill chunk cap below the budget leaves it part-empty with one long prompt resident
        return POLICIES[self.name][0] and self.options.get("chunk_size") is None

    @property
    def label(self) -> str:
        """The name to show: the built-in's name, or a python plug-in's own ``name``."""
        if self.name == "python":
            from ..policies.plugin import policy_object

            return str(policy_object(self).name)
        return self.name

    def flag(self, key: str) -> Any:
        """The flag's value, or its documented default."""
        return self.options.get(key, POLICIES[self.name][1][key][1])

    def to_toml(self) -> str | dict[str, Any]:
        return self.name if not self.options else {"kind": self.name, **self.options}


def policy_from_toml(value: Any, where: str, base: Path | None = None) -> PolicySpec:
    """Read ``policy = "name"`` or ``policy = { kind = "name", flag = ... }``.

    A ``python`` plug-in's ``target = "file.py:Class"`` with a relative path is resolved against
    ``base`` (the model file's folder).
    """
    if isinstance(value, str):
        value = {"kind": value}  # same path as a table, so errors name the engine's policy field
    if isinstance(value, dict):
        d = dict(value)
        name = d.pop("kind", None)
        tgt = d.get("target")
        if name == "python" and base is not None and isinstance(tgt, str) and ":" in tgt:
            file, attr = tgt.rsplit(":", 1)
            # resolved only when the file is there, so a model naming a missing file still round-trips
            if file.endswith(".py") and not Path(file).expanduser().is_absolute() and (base / file).is_file():
                d["target"] = f"{(base / file).resolve()}:{attr}"
        if name is None:
            raise ModelError(f"{where}.kind", None, f"must name the policy, one of {sorted(POLICIES)}")
        try:
            return PolicySpec(name, d)
        except ModelError as e:
            raise ModelError(f"{where}.{e.field.removeprefix('policy.').removeprefix('policy')}".rstrip("."),
                             e.value, e.allowed) from None
    raise ModelError(where, value, "must be a policy name or a table { kind = NAME, ... }")
