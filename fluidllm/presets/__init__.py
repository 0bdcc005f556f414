"""Shipped batch-time presets, each with its source named.

``presets.toml`` beside this file holds them; ``scripts/make_presets.py`` regenerates the fitted
ones from the project's calibration profiles. ``get_preset(NAME)`` returns the model,
``PRESETS[NAME]`` its record (model parameters, source, fit statistics).
"""
from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

from ..errors import ModelError
from ..model import batchtime as B

__all__ = ["PRESETS", "get_preset", "preset_names"]

_KINDS = {"constant": B.Constant, "affine": B.Affine, "piecewise-linear": B.PiecewiseLinear,
          "staircase": B.Staircase, "two-feature": B.TwoFeature}


def _load() -> dict[str, dict[str, Any]]:
    text = resources.files(__package__).joinpath("presets.toml").read_text()
    return tomllib.loads(text)["presets"]


PRESETS: dict[str, dict[str, Any]] = _load()


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str, field: str = "batch_time.preset") -> B.BatchTime:
    """The batch-time model of preset ``name``.

    Raises:
        ModelError: unknown preset (naming the ones shipped).
    """
    rec = PRESETS.get(name) if isinstance(name, str) else None
    if rec is None:
        raise ModelError(field, name, f"must be one of {preset_names()}")
    cls = _KINDS[rec["model"]["kind"]]
    params = {k: v for k, v in rec["model"].items() if k != "kind"}
    return cls(**params, preset=name)
