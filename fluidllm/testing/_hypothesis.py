"""Import guard: fluidllm.testing needs hypothesis (the ``test`` extra), and says so clearly."""
from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("fluidllm.testing needs hypothesis, which is not installed: "
                      "pip install 'fluidllm[test]' (or pip install hypothesis)") from e
