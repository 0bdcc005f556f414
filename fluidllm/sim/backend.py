"""Array backends for the vectorized simulator: NumPy (default), CuPy and PyTorch, same code.

The core (:mod:`fluidllm.sim.core`) and the policies (:mod:`fluidllm.policies`) are written
against the small namespace a :class:`Backend` exposes (``zeros``, ``cumsum``, ``where``, ...),
with NumPy's signatures. NumPy and CuPy provide it natively; PyTorch gets a thin adapter. Random
numbers are always drawn by NumPy on the host and copied over, so a seed gives the same numbers
on every backend.
"""
from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ..errors import ModelError

__all__ = ["Backend", "get_backend", "BACKENDS", "available_backends"]

#: Backend names ``simulate(..., backend=...)`` accepts.
BACKENDS = ("numpy", "cupy", "torch")


class Backend:
    """An array namespace with NumPy's signatures plus host transfer helpers.

    Attributes:
        name: ``numpy``, ``cupy`` or ``torch``.
        device: where arrays live (``cpu`` or e.g. ``cuda:0``).
    """

    name = "numpy"
    device = "cpu"

    def __init__(self) -> None:
        self.xp = np

    # Creation and transfer ---------------------------------------------------------------------
    def zeros(self, shape: Any, dtype: str) -> Any:
        return self.xp.zeros(shape, dtype=dtype)

    def full(self, shape: Any, value: Any, dtype: str) -> Any:
        return self.xp.full(shape, value, dtype=dtype)

    def arange(self, n: int, dtype: str = "int64") -> Any:
        return self.xp.arange(n, dtype=dtype)

    def asarray(self, a: Any, dtype: str | None = None) -> Any:
        """Copy a host (NumPy) array to the backend."""
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def astype(self, a: Any, dtype: str) -> Any:
        return a.astype(dtype, copy=False)

    def copy(self, a: Any) -> Any:
        return a.copy()

    # Elementwise and reductions ----------------------------------------------------------------
    def cumsum(self, a: Any, dtype: str) -> Any:
        """Cumulative sum along the slot axis (axis 1), accumulated in ``dtype``."""
        return self.xp.cumsum(a, axis=1, dtype=dtype)

    def rsum(self, a: Any, dtype: str | None = None) -> Any:
        """Sum along axis 1 (per replication)."""
        return a.sum(axis=1, dtype=dtype)

    def rany(self, a: Any) -> Any:
        return a.any(axis=1)

    def rmax(self, a: Any) -> Any:
        return a.max(axis=1)

    def rmin(self, a: Any) -> Any:
        return a.min(axis=1)

    def minimum(self, a: Any, b: Any) -> Any:
        return self.xp.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return self.xp.maximum(a, b)

    def where(self, c: Any, a: Any, b: Any) -> Any:
        return self.xp.where(c, a, b)

    def nonzero(self, a: Any) -> tuple[Any, ...]:
        return self.xp.nonzero(a)

    def nonzero2d(self, a: Any) -> tuple[Any, Any]:
        """(rows, cols) of the True entries of a 2-D mask, row-major (a flat scan: much faster than
        ``numpy.nonzero`` on 2-D arrays)."""
        w = a.shape[1]
        f = self.xp.flatnonzero(a)
        return f // w, f % w

    def concat(self, a: Any, b: Any) -> Any:
        return self.xp.concatenate([a, b])

    def bincount(self, a: Any, n: int) -> Any:
        """Counts of 0..n-1 in the integer array ``a`` (int64)."""
        return self.xp.bincount(a, minlength=n).astype("int64")

    def bincount_sum(self, a: Any, w: Any, n: int) -> Any:
        """Per-bin sums of the integer weights ``w`` (int64, exact below 2**53)."""
        return self.xp.bincount(a, weights=w, minlength=n).astype("int64")

    def nbytes(self, a: Any) -> int:
        return int(a.nbytes)


class _CupyBackend(Backend):
    name = "cupy"

    def __init__(self) -> None:
        import cupy  # type: ignore[import-not-found]

        self.xp = cupy
        self.device = f"cuda:{cupy.cuda.Device().id}"

    def to_numpy(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a)


class _TorchBackend(Backend):
    """PyTorch adapter: NumPy-style names and signatures over ``torch`` tensors."""

    name = "torch"

    def __init__(self, device: str | None = None) -> None:
        import torch  # type: ignore[import-not-found]

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._dt = {"int8": torch.int8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64,
                    "float32": torch.float32, "float64": torch.float64, "bool": torch.bool}
        self.xp = self

    def _d(self, dtype: str | None) -> Any:
        return None if dtype is None else self._dt[np.dtype(dtype).name]

    def zeros(self, shape: Any, dtype: str) -> Any:
        return self.torch.zeros(shape, dtype=self._d(dtype), device=self.device)

    def full(self, shape: Any, value: Any, dtype: str) -> Any:
        return self.torch.full(shape if isinstance(shape, tuple) else (shape,), value, dtype=self._d(dtype),
                               device=self.device)

    def arange(self, n: int, dtype: str = "int64") -> Any:
        return self.torch.arange(n, dtype=self._d(dtype), device=self.device)

    def asarray(self, a: Any, dtype: str | None = None) -> Any:
        if isinstance(a, self.torch.Tensor):
            return a.to(device=self.device, dtype=self._d(dtype) or a.dtype)
        arr = np.asarray(a, dtype=dtype)
        return self.torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        if isinstance(a, self.torch.Tensor):
            return a.detach().cpu().numpy()
        return np.asarray(a)

    def astype(self, a: Any, dtype: str) -> Any:
        return a.to(self._d(dtype))

    def copy(self, a: Any) -> Any:
        return a.clone()

    def cumsum(self, a: Any, dtype: str) -> Any:
        return self.torch.cumsum(a, dim=1, dtype=self._d(dtype))

    def rsum(self, a: Any, dtype: str | None = None) -> Any:
        return a.sum(dim=1, dtype=self._d(dtype))

    def rany(self, a: Any) -> Any:
        return a.any(dim=1)

    def rmax(self, a: Any) -> Any:
        return a.amax(dim=1)

    def rmin(self, a: Any) -> Any:
        return a.amin(dim=1)

    def minimum(self, a: Any, b: Any) -> Any:
        a, b = self._tensors(a, b)
        return self.torch.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        a, b = self._tensors(a, b)
        return self.torch.maximum(a, b)

    def where(self, c: Any, a: Any, b: Any) -> Any:
        a, b = self._tensors(a, b)
        return self.torch.where(c, a, b)

    def nonzero(self, a: Any) -> tuple[Any, ...]:
        return self.torch.nonzero(a, as_tuple=True)

    def nonzero2d(self, a: Any) -> tuple[Any, Any]:
        return self.torch.nonzero(a, as_tuple=True)

    def concat(self, a: Any, b: Any) -> Any:
        return self.torch.cat([a, b])

    def bincount(self, a: Any, n: int) -> Any:
        return self.torch.bincount(a.to(self.torch.int64), minlength=n)

    def bincount_sum(self, a: Any, w: Any, n: int) -> Any:
        return self.torch.bincount(a.to(self.torch.int64), weights=w.to(self.torch.float64),
                                   minlength=n).to(self.torch.int64)

    def nbytes(self, a: Any) -> int:
        return int(a.element_size() * a.numel())

    def _tensors(self, a: Any, b: Any) -> tuple[Any, Any]:
        t = self.torch.Tensor
        if not isinstance(a, t) and isinstance(b, t):
            a = self.torch.as_tensor(a, dtype=b.dtype, device=b.device)
        elif isinstance(a, t) and not isinstance(b, t):
            b = self.torch.as_tensor(b, dtype=a.dtype, device=a.device)
        return a, b


def available_backends() -> list[str]:
    """Backends importable here (``numpy`` always; ``cupy`` and ``torch`` when installed)."""
    out = ["numpy"]
    for mod in ("cupy", "torch"):
        try:
            importlib.import_module(mod)
            out.append(mod)
        except Exception:  # ImportError, or a broken CUDA install
            pass
    return out


def get_backend(name: str | Backend = "numpy") -> Backend:
    """The backend called ``name`` (``numpy``, ``cupy``, ``torch``; ``torch`` uses CUDA when present).

    Raises:
        ModelError: an unknown name, or a backend whose library is not installed (or has no GPU).
    """
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS:
        raise ModelError("backend", name, f"must be one of {list(BACKENDS)}")
    if name == "numpy":
        return Backend()
    try:
        return _CupyBackend() if name == "cupy" else _TorchBackend()
    except Exception as e:  # ImportError, CUDA runtime errors
        raise ModelError("backend", name, f"is not usable here ({type(e).__name__}: {e}); "
                         f"available: {available_backends()}") from None
