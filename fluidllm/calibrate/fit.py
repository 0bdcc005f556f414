"""Least-squares fits of the batch-time families to a GPU profile, with bootstrap intervals.

Families (formulas in :mod:`fluidllm.model.batchtime`; times in ms, n = tokens in the batch):

* ``constant``          t = c
* ``affine``            t = c + a·n
* ``piecewise-linear``  t = c + a·max(0, n − b0)           knee b0 searched over integers 0..max n
  (beyond 65 536 candidates: a grid holding every measured token count, refined between neighbours)
* ``staircase``         t = c + a·⌈n / b0⌉                  step b0 searched over integers 1..max n
* ``table``             PCHIP through the measured points    (an interpolant: not a candidate for BIC)
* ``two-feature``       t = c + a·max(0, P + D − b0) + decode_ms·D + kv_ms·K + prefill_sq_ms·P²
  (P prefill tokens, D decode requests, K their total KV context) — knee b0 searched over 0..max(P + D)

Every coefficient is constrained to be >= 0 (``c`` of piecewise-linear and two-feature > 0, as the
model classes require: a knee whose best fit needs c = 0 is not admissible for those two). For a fixed knee the constrained least-squares problem is solved exactly: in
closed form for the two-coefficient families, and for the two-feature family by the normal equations
of all candidate knees at once, falling back (only where a coefficient comes out negative and the
unconstrained fit could still beat the best feasible one) to the exact active-set enumeration; the
final fit at the chosen knee is checked with :func:`scipy.optimize.nnls`. Knees are searched
exhaustively over the integers, vectorised over candidates and bootstrap replicates.

Uncertainty: a nonparametric bootstrap (rows resampled with replacement, the knee searched again in
every replicate); 95 % percentile intervals for every parameter. Same seed → identical numbers.

Model choice: the lowest BIC = m·ln(SSE/m) + k·ln(m) (m rows, k fitted parameters counting the knee)
among the parametric families that can represent the data. Token-count families can represent the
data only when every token count appears with a single batch composition (P, D, K); the two-feature
family always can. The table is an interpolant (zero residual by construction) and is never chosen
unless it is the only family fitted. SSE/m is floored at (1e-9·RMS(t))² so that an exact fit has a
finite BIC (ties then go to the family with fewer parameters).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ModelError
from ..model import batchtime as B
from .profile import Profile, read_profile

__all__ = ["FAMILIES", "FamilyFit", "CalibrationResult", "fit_family", "fit_profile", "inline_toml"]

#: every family ``fit_family`` knows, in the order results list them.
FAMILIES: tuple[str, ...] = ("constant", "affine", "piecewise-linear", "staircase", "table", "two-feature")
_TOKEN_FAMILIES = ("constant", "affine", "piecewise-linear", "staircase", "table")
_KNEE_CANDIDATE_CAP = 65536   # piecewise knees: above this many integers, a grid then a local refine
_CHUNK_ELEMS = 2_000_000      # candidate×row elements materialised at once
_PAIR_CHUNK = 60_000          # (knee, replicate) systems solved at once in the two-feature search
_FLOOR_REL = 1e-9             # BIC: SSE/m floored at (1e-9·RMS t)^2

SELECTION_RULE = ("lowest BIC = m·ln(SSE/m) + k·ln(m) among the parametric families that can represent "
                  "the data (token-count families only when each token count has one batch composition; "
                  "two-feature always); the table is an interpolant and is chosen only if it is the only "
                  "family fitted")


# ----------------------------------------------------------------------------------- results


def _py(x: Any) -> Any:
    """JSON-safe Python scalars / lists from numpy values."""
    if isinstance(x, dict):
        return {str(k): _py(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_py(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_py(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    return x


@dataclass(frozen=True, eq=False)
class FamilyFit:
    """One family fitted to one data set.

    ``params``: fitted parameters by name (times in ms, ``b0`` in tokens); ``intervals``: 95 %
    bootstrap percentile interval (lo, hi) per parameter (empty when ``n_boot`` = 0 or for the
    table); ``residual_percentiles``: ``abs_ms_p50/p90/p99`` of |t − t̂| in ms and ``rel_p50/p90/p99``
    of |t − t̂| / t; ``bic``: None for the table (an interpolant); ``model``: the fitted
    :class:`~fluidllm.model.batchtime.BatchTime`.
    """

    family: str
    params: dict[str, float | int]
    intervals: dict[str, tuple[float, float]]
    r2: float
    rmse_ms: float
    residual_percentiles: dict[str, float]
    bic: float | None
    n_params: int
    model: B.BatchTime
    n_rows: int = 0
    n_boot: int = 0
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: name, params, intervals, r2, rmse_ms, residual_percentiles, bic, ..."""
        return _py({"family": self.family, "params": self.params,
                    "intervals": {k: list(v) for k, v in self.intervals.items()},
                    "r2": self.r2, "rmse_ms": self.rmse_ms, "residual_percentiles": self.residual_percentiles,
                    "bic": self.bic, "n_params": self.n_params, "n_rows": self.n_rows, "n_boot": self.n_boot,
                    "notes": list(self.notes)})


@dataclass(frozen=True, eq=False)
class CalibrationResult:
    """All families fitted to one profile, and the one chosen by ``selection_rule``."""

    profile: str
    scenario: tuple[str, ...] | None
    n_rows: int
    fits: tuple[FamilyFit, ...]
    chosen: FamilyFit
    selection_rule: str
    seed: int | None
    n_boot: int
    max_tokens: int | None = None
    notes: tuple[str, ...] = ()

    def fit(self, family: str) -> FamilyFit:
        """The fit of ``family``.

        Raises:
            ModelError: ``family`` was not fitted.
        """
        for f in self.fits:
            if f.family == family:
                return f
        raise ModelError("family", family, f"must be one of the fitted families {[f.family for f in self.fits]}")

    @property
    def r2(self) -> float:
        """R² of the chosen family."""
        return self.chosen.r2

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict with ``model`` (chosen model as in TOML), ``r2``, ``families`` and provenance."""
        return _py({"model": self.chosen.model.to_dict(), "family": self.chosen.family, "r2": self.chosen.r2,
                    "rmse_ms": self.chosen.rmse_ms, "families": [f.to_dict() for f in self.fits],
                    "selection_rule": self.selection_rule, "profile": self.profile,
                    "scenario": None if self.scenario is None else list(self.scenario),
                    "max_tokens": self.max_tokens, "n_rows": self.n_rows, "seed": self.seed,
                    "n_boot": self.n_boot, "notes": list(self.notes)})

    def table(self) -> str:
        """Readable text table of every family (the chosen one marked ``*``)."""
        head = f"{'':1} {'family':<17} {'k':>4} {'R²':>9} {'RMSE ms':>9} {'p90|r| ms':>10} {'p90 rel':>8} {'BIC':>10}  parameters [95 % bootstrap]"
        lines = [f"profile {self.profile}", f"rows {self.n_rows}"
                 + (f", scenario {', '.join(self.scenario)}" if self.scenario else "")
                 + (f", tokens <= {self.max_tokens}" if self.max_tokens is not None else "")
                 + f", bootstrap {self.n_boot}, seed {self.seed}", head, "-" * len(head)]
        for f in self.fits:
            mark = "*" if f is self.chosen else " "
            bic = "—" if f.bic is None else f"{f.bic:10.1f}"
            ps = []
            for k, v in f.params.items():
                s = f"{k}={_fmt(v)}"
                if k in f.intervals:
                    lo, hi = f.intervals[k]
                    s += f" [{_fmt(lo)}, {_fmt(hi)}]"
                ps.append(s)
            r2 = 0.0 if abs(f.r2) < 1e-12 else f.r2     # display only: −1e-16 from rounding reads as 0
            lines.append(f"{mark} {f.family:<17} {f.n_params:>4} {r2:>9.5f} {f.rmse_ms:>9.4g} "
                         f"{f.residual_percentiles['abs_ms_p90']:>10.4g} {f.residual_percentiles['rel_p90']:>8.2%} "
                         f"{bic:>10}  {'; '.join(ps)}")
        lines.append(f"chosen: {self.chosen.family} ({self.selection_rule})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_toml(self) -> str:
        """A TOML snippet ``batch_time = { ... }`` for the chosen model, with a comment naming the source."""
        scen = f", scenario {', '.join(self.scenario)}" if self.scenario else ""
        tok = f", tokens <= {self.max_tokens}" if self.max_tokens is not None else ""
        return (f"# {self.chosen.family} fit (R² {self.chosen.r2:.5f}, RMSE {self.chosen.rmse_ms:.4g} ms) "
                f"to {self.profile}{scen}{tok}, {self.n_rows} rows; fluidllm.calibrate.fit_profile, seed {self.seed}\n"
                f"batch_time = {inline_toml(self.chosen.model.to_dict())}\n")


def _fmt(v: float) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.5g}"


def inline_toml(d: dict[str, Any]) -> str:
    """``d`` as a one-line TOML inline table ``{ k = v, ... }`` (values formatted by tomli_w)."""
    import tomli_w

    def val(v: Any) -> str:
        if isinstance(v, dict):
            return inline_toml(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return tomli_w.dumps({"v": _py(v)}).split("=", 1)[1].strip()

    def key(k: str) -> str:
        return tomli_w.dumps({str(k): 0}).split("=", 1)[0].strip()

    return "{ " + ", ".join(f"{key(k)} = {val(v)}" for k, v in d.items()) + " }"


# ----------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class _Data:
    n: np.ndarray
    t: np.ndarray
    P: np.ndarray
    D: np.ndarray
    K: np.ndarray
    has_composition: bool = False

    @property
    def m(self) -> int:
        return int(self.t.size)


def _array(x: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ModelError(name, "<array>", "must be an array of numbers") from None
    bad = np.flatnonzero(~np.isfinite(a) | (a < 0))
    if bad.size:
        raise ModelError(f"{name}[{int(bad[0])}]", float(a[bad[0]]), "must be a finite number >= 0")
    return a


def _make_data(n: Any, t: Any, P: Any = None, D: Any = None, K: Any = None) -> _Data:
    nn = _array(n, "tokens_in_batch")
    tt = _array(t, "iteration_ms")
    if nn.size == 0:
        raise ModelError("tokens_in_batch", "<empty>", "needs at least one profile row")
    if nn.size != tt.size:
        raise ModelError("iteration_ms", f"<{tt.size} values>", f"must have one time per token count ({nn.size})")
    bad = np.flatnonzero(tt <= 0)
    if bad.size:
        raise ModelError(f"iteration_ms[{int(bad[0])}]", float(tt[bad[0]]), "must be > 0")
    has = P is not None or D is not None or K is not None
    DD = np.zeros_like(nn) if D is None else _array(D, "decode_tokens")
    PP = nn - DD if P is None else _array(P, "prefill_tokens")
    KK = np.zeros_like(nn) if K is None else _array(K, "kv_context_tokens")
    for name, arr in (("prefill_tokens", PP), ("decode_tokens", DD), ("kv_context_tokens", KK)):
        if arr.size != nn.size:
            raise ModelError(name, f"<{arr.size} values>", f"must have one value per row ({nn.size})")
    if np.any(PP < 0):
        i = int(np.flatnonzero(PP < 0)[0])
        raise ModelError(f"prefill_tokens[{i}]", float(PP[i]), "must be >= 0 (decode_tokens exceed tokens_in_batch)")
    off = np.flatnonzero(np.abs(PP + DD - nn) > 1e-9 * np.maximum(1.0, nn))
    if off.size:
        i = int(off[0])
        raise ModelError(f"prefill_tokens[{i}] + decode_tokens[{i}]", float(PP[i] + DD[i]),
                         f"must equal tokens_in_batch ({nn[i]:g})")
    return _Data(nn, tt, PP, DD, KK, has)


def _rng(seed: int | np.random.Generator) -> tuple[np.random.Generator, int | None]:
    if isinstance(seed, np.random.Generator):
        return seed, None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ModelError("seed", seed, "must be an integer >= 0 or a numpy Generator")
    return np.random.default_rng(int(seed)), int(seed)


def _check_n_boot(n_boot: Any) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ModelError("n_boot", n_boot, "must be an integer >= 0")
    return int(n_boot)


def _boot_weights(m: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(1 + n_boot, m) row weights: row 0 all ones (the fit itself), then resampling counts."""
    W = np.ones((1 + n_boot, m))
    if n_boot:
        idx = rng.integers(0, m, size=(n_boot, m))
        idx += (np.arange(n_boot) * m)[:, None]
        W[1:] = np.bincount(idx.ravel(), minlength=n_boot * m).reshape(n_boot, m)
    return W


# ----------------------------------------------------------------------------------- two-coefficient search


def _chunks(n_cand: int, m: int):
    step = max(1, _CHUNK_ELEMS // max(1, m))
    for s in range(0, n_cand, step):
        yield slice(s, min(n_cand, s + step))


def _two_coef(Wsum, St, Stt, Sx, Sxx, Sxt, c_positive: bool):
    """Exact min of Σw(t − c − a·x)² over c, a >= 0 (c > 0 if ``c_positive``), elementwise.

    Returns (sse, c, a); sse = inf where no admissible solution.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        det = Wsum * Sxx - Sx * Sx
        nondeg = det > 1e-12 * np.maximum(Wsum * Sxx, 1e-300)
        a_u = np.where(nondeg, (Wsum * Sxt - Sx * St) / np.where(nondeg, det, 1.0), 0.0)
        c_u = (St - a_u * Sx) / Wsum
        ok_u = nondeg & (a_u >= 0) & ((c_u > 0) if c_positive else (c_u >= 0))

        def sse(c, a):
            return Stt - 2 * c * St - 2 * a * Sxt + c * c * Wsum + 2 * c * a * Sx + a * a * Sxx

        c_0 = St / Wsum                                     # a = 0 edge (always admissible: t > 0)
        a_c = np.where(Sxx > 0, Sxt / np.where(Sxx > 0, Sxx, 1.0), 0.0)   # c = 0 edge
        s_u = np.where(ok_u, sse(c_u, a_u), np.inf)
        s_0 = sse(c_0, 0.0)
        s_c = np.inf if c_positive else np.where(Sxx > 0, sse(0.0, a_c), np.inf)
        s = np.minimum(s_u, np.minimum(s_0, s_c))
        c = np.where(s_u <= s, c_u, np.where(s_0 <= s, c_0, 0.0))
        a = np.where(s_u <= s, a_u, np.where(s_0 <= s, 0.0, a_c))
    return s, c, a


def _knee_candidates(nmax: int, lo: int) -> np.ndarray:
    return np.arange(lo, nmax + 1, dtype=np.int64)


def _search_two_coef(feature, cands: np.ndarray, d: _Data, Wb: np.ndarray, c_positive: bool):
    """Best candidate per weight row: (idx, c, a, sse) arrays of length Wb.shape[0]."""
    t = d.t
    Wsum = Wb.sum(1)
    St = Wb @ t
    Stt = Wb @ (t * t)
    Wt = (Wb * t).T
    nb = Wb.shape[0]
    best = np.full(nb, np.inf)
    bi = np.zeros(nb, dtype=np.int64)
    bc = np.zeros(nb)
    ba = np.zeros(nb)
    for sl in _chunks(cands.size, d.m):
        X = feature(cands[sl])                          # (C, m)
        Sx = X @ Wb.T
        Sxx = (X * X) @ Wb.T
        Sxt = X @ Wt
        s, c, a = _two_coef(Wsum, St, Stt, Sx, Sxx, Sxt, c_positive)
        j = np.argmin(s, axis=0)
        r = np.arange(nb)
        sj = s[j, r]
        upd = sj < best
        best = np.where(upd, sj, best)
        bi = np.where(upd, j + sl.start, bi)
        bc = np.where(upd, c[j, r], bc)
        ba = np.where(upd, a[j, r], ba)
    return bi, bc, ba, best


def _knee_search(feature, d: _Data, Wb: np.ndarray, lo: int, c_positive: bool, search, exhaustive: bool = False):
    """Integer knee search, exhaustive up to _KNEE_CANDIDATE_CAP candidates (or always if ``exhaustive``),
    else a grid with the data's token counts, refined over the integers between neighbouring grid points."""
    nmax = int(math.ceil(d.n.max()))
    if exhaustive or nmax - lo + 1 <= _KNEE_CANDIDATE_CAP:
        cands = _knee_candidates(nmax, lo)
        out = search(feature, cands, d, Wb, c_positive)
        return (cands[out[0]],) + tuple(out[1:])
    grid = np.unique(np.concatenate([np.linspace(lo, nmax, _KNEE_CANDIDATE_CAP).round().astype(np.int64),
                                     np.clip(np.unique(d.n).astype(np.int64), lo, nmax)]))
    idx, *rest = search(feature, grid, d, Wb, c_positive)
    res = [np.array(r, copy=True) for r in rest]
    kn = grid[idx].copy()
    for i in range(Wb.shape[0]):      # refine between the neighbouring grid points of each replicate
        g = int(idx[i])
        a_, b_ = int(grid[max(g - 1, 0)]), int(grid[min(g + 1, grid.size - 1)])
        local = np.arange(a_, b_ + 1, dtype=np.int64)
        o = search(feature, local, d, Wb[i:i + 1], c_positive)
        if o[-1][0] < res[-1][i]:
            kn[i] = local[o[0][0]]
            for r, v in zip(res, o[1:]):
                r[i] = v[0]
    return (kn, *res)


# ----------------------------------------------------------------------------------- two-feature search


def _solve_spd(G: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve G β = r for stacks of PSD systems by Jacobi scaling + a 1e-10 ridge; zero columns → β = 0."""
    dg = np.einsum("...ii->...i", G)
    s = np.where(dg > 0, 1.0 / np.sqrt(np.where(dg > 0, dg, 1.0)), 0.0)
    Gs = G * s[..., :, None] * s[..., None, :]
    q = G.shape[-1]
    Gs = Gs + 1e-10 * np.eye(q)
    bs = np.linalg.solve(Gs, (r * s)[..., None])[..., 0]
    return bs * s, bs


def _sse_q(beta: np.ndarray, G: np.ndarray, r: np.ndarray, Stt: np.ndarray) -> np.ndarray:
    return Stt - 2 * np.einsum("...i,...i->...", beta, r) + np.einsum("...i,...ij,...j->...", beta, G, beta)


def _nnls_enumerate(G: np.ndarray, r: np.ndarray, Stt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact min over β >= 0 with β_0 > 0 (intercept) by enumerating supports that contain 0."""
    N, q = r.shape
    best = np.full(N, np.inf)
    bb = np.zeros((N, q))
    for mask in range(1 << (q - 1)):
        S = [0] + [j + 1 for j in range(q - 1) if mask >> j & 1]
        Gs = G[:, S][:, :, S]
        beta_s, _ = _solve_spd(Gs, r[:, S])
        ok = (beta_s[:, 0] > 0) & np.all(beta_s[:, 1:] >= 0, axis=1)
        sse = _sse_q(beta_s, Gs, r[:, S], Stt)
        upd = ok & (sse < best)
        if np.any(upd):
            best = np.where(upd, sse, best)
            full = np.zeros((N, q))
            full[:, S] = beta_s
            bb[upd] = full[upd]
    return best, bb


def _search_two_feature(F: np.ndarray, d: _Data, Wb: np.ndarray, cands: np.ndarray):
    """Best knee per weight row for t = c + a·max(0, n − b0) + F·γ, all coefficients >= 0, c > 0."""
    t, n = d.t, d.n
    nb, p = Wb.shape[0], F.shape[1]
    q = 2 + p
    Wsum = Wb.sum(1)
    St = Wb @ t
    Stt = Wb @ (t * t)
    SF = Wb @ F
    SFt = Wb @ (F * t[:, None])
    SFF = np.einsum("bm,mi,mj->bij", Wb, F, F)
    R = np.concatenate([Wb.T, (Wb * t).T] + [(Wb * F[:, j]).T for j in range(p)], axis=1)   # (m, nb·(2+p))
    best = np.full(nb, np.inf)
    bi = np.zeros(nb, dtype=np.int64)
    bbeta = np.zeros((nb, q))
    step_c = max(1, min(_CHUNK_ELEMS // max(1, d.m), _PAIR_CHUNK // max(1, nb)))
    for s0 in range(0, cands.size, step_c):
        cc = cands[s0:s0 + step_c]
        X = np.maximum(0.0, n[None, :] - cc[:, None])
        XR = (X @ R).reshape(cc.size, 2 + p, nb)                    # Sx, Sxt, SxF_j  (C, ·, B)
        Sxx = (X * X) @ Wb.T
        C = cc.size
        G = np.empty((C, nb, q, q))
        G[:, :, 0, 0] = Wsum
        G[:, :, 0, 1] = G[:, :, 1, 0] = XR[:, 0, :]
        G[:, :, 1, 1] = Sxx
        G[:, :, 0, 2:] = SF
        G[:, :, 2:, 0] = SF
        G[:, :, 1, 2:] = np.moveaxis(XR[:, 2:, :], 1, 2)
        G[:, :, 2:, 1] = G[:, :, 1, 2:]
        G[:, :, 2:, 2:] = SFF
        r = np.empty((C, nb, q))
        r[:, :, 0] = St
        r[:, :, 1] = XR[:, 1, :]
        r[:, :, 2:] = SFt
        beta, _ = _solve_spd(G, r)
        sse_u = _sse_q(beta, G, r, Stt[None, :])
        ok = (beta[..., 0] > 0) & np.all(beta[..., 1:] >= 0, axis=-1)
        sse = np.where(ok, sse_u, np.inf)
        bound = np.minimum(best, sse.min(axis=0))                       # best admissible so far
        need = ~ok & (sse_u < bound[None, :] * (1 + 1e-12) + 1e-12)
        if np.any(need):
            ci, bj = np.nonzero(need)
            s_f, b_f = _nnls_enumerate(G[ci, bj], r[ci, bj], Stt[bj])
            sse[ci, bj] = s_f
            beta[ci, bj] = b_f
        j = np.argmin(sse, axis=0)
        rr = np.arange(nb)
        sj = sse[j, rr]
        upd = sj < best
        best = np.where(upd, sj, best)
        bi = np.where(upd, j + s0, bi)
        bbeta[upd] = beta[j, rr][upd]
    return bi, bbeta, best


# ----------------------------------------------------------------------------------- one family


_PARAMS = {"constant": ("c_ms",), "affine": ("c_ms", "a_ms"), "piecewise-linear": ("c_ms", "a_ms", "b0"),
           "staircase": ("c_ms", "a_ms", "b0"),
           "two-feature": ("c_ms", "a_ms", "b0", "decode_ms", "kv_ms", "prefill_sq_ms")}
_EXTRA = (("decode_ms", "D"), ("kv_ms", "K"), ("prefill_sq_ms", "P²"))


def _two_feature_columns(d: _Data) -> tuple[list[int], list[str]]:
    """Indices (into D, K, P²) of the extra columns that are estimable, and notes on the others."""
    cols = [d.D, d.K, d.P * d.P]
    keep: list[int] = []
    notes: list[str] = []
    basis = [np.ones(d.m)]
    for j, (name, sym) in enumerate(_EXTRA):
        x = cols[j]
        if not np.any(x > 0):
            notes.append(f"{name} fixed at 0: {sym} is 0 in every row")
            continue
        trial = np.column_stack(basis + [x])
        trial = trial / np.linalg.norm(trial, axis=0)
        if np.linalg.matrix_rank(trial, tol=1e-9) < trial.shape[1]:
            notes.append(f"{name} fixed at 0: {sym} is collinear with the intercept and earlier columns in these rows")
            continue
        keep.append(j)
        basis.append(x)
    return keep, notes


def _fit_params(family: str, d: _Data, Wb: np.ndarray, extra: list[int] | None = None) -> np.ndarray:
    """Parameter vectors (rows = weight rows) in the order of _PARAMS[family]."""
    nb = Wb.shape[0]
    if family == "constant":
        return ((Wb @ d.t) / Wb.sum(1))[:, None]
    n = d.n
    if family == "affine":
        Sx, Sxx, Sxt = Wb @ n, Wb @ (n * n), Wb @ (n * d.t)
        _, c, a = _two_coef(Wb.sum(1), Wb @ d.t, Wb @ (d.t * d.t), Sx, Sxx, Sxt, c_positive=False)
        return np.column_stack([c, a])
    if family == "piecewise-linear":
        feat = lambda b: np.maximum(0.0, n[None, :] - b[:, None].astype(float))  # noqa: E731
        kn, c, a, _ = _knee_search(feat, d, Wb, 0, True, _search_two_coef)
        return np.column_stack([c, a, kn])
    if family == "staircase":
        feat = lambda b: np.ceil(n[None, :] / b[:, None].astype(float))  # noqa: E731
        # the staircase SSE is not smooth in b0: always exhaustive over 1..max n
        kn, c, a, _ = _knee_search(feat, d, Wb, 1, False, _search_two_coef, exhaustive=True)
        return np.column_stack([c, a, kn])
    if family == "two-feature":
        allF = np.column_stack([d.D, d.K, d.P * d.P])
        F = allF[:, extra]
        search = lambda _f, cands, d_, W_, _c: _search_two_feature(F, d_, W_, cands)  # noqa: E731
        kn, beta, _ = _knee_search(None, d, Wb, 0, True, search)
        # the knee comes from the normal equations; the coefficients at that knee are recomputed by
        # scipy.optimize.nnls on the (weighted, column-scaled) design, which is more accurate
        for i in range(nb):
            x = _nnls_refit_two_feature(d, int(kn[i]), extra, Wb[i])
            if x[0] > 0:
                beta[i] = x
        out = np.zeros((nb, 6))
        out[:, 0], out[:, 1], out[:, 2] = beta[:, 0], beta[:, 1], kn
        for k, j in enumerate(extra):
            out[:, 3 + j] = beta[:, 2 + k]
        return out
    raise ModelError("family", family, f"must be one of {list(FAMILIES)}")  # pragma: no cover


def _nnls_refit_two_feature(d: _Data, b0: int, extra: list[int], w: np.ndarray | None = None) -> np.ndarray:
    """c, a, γ at a fixed knee by scipy.optimize.nnls on the (row-weighted) column-scaled design."""
    from scipy.optimize import nnls

    keep = slice(None) if w is None else w > 0
    sw = 1.0 if w is None else np.sqrt(w[keep])[:, None]
    n, t = d.n[keep], d.t[keep]
    extras = [(d.D, d.K, d.P * d.P)[j][keep] for j in extra]
    A = np.column_stack([np.ones(n.size), np.maximum(0.0, n - b0), *extras]) * sw
    sc = np.linalg.norm(A, axis=0)
    sc[sc == 0] = 1.0
    x, _ = nnls(A / sc, t * (sw if w is None else sw[:, 0]), maxiter=50 * A.shape[1])
    return x / sc


def _model(family: str, p: dict[str, Any]) -> B.BatchTime:
    cls = {"constant": B.Constant, "affine": B.Affine, "piecewise-linear": B.PiecewiseLinear,
           "staircase": B.Staircase, "two-feature": B.TwoFeature}[family]
    return cls(**p)


def _stats(t: np.ndarray, pred: np.ndarray, k: int | None) -> tuple[float, float, dict[str, float], float | None]:
    res = t - pred
    m = t.size
    sse = float(np.sum(res * res))
    sst = float(np.sum((t - t.mean()) ** 2))
    if sst > 0:
        r2 = 1.0 - sse / sst
    else:
        r2 = 1.0 if sse <= (1e-12 * float(np.sqrt(np.mean(t * t)))) ** 2 * m else 0.0
    ab = np.abs(res)
    rel = ab / t
    pct = {f"abs_ms_p{q}": float(np.percentile(ab, q)) for q in (50, 90, 99)}
    pct.update({f"rel_p{q}": float(np.percentile(rel, q)) for q in (50, 90, 99)})
    bic = None
    if k is not None:
        floor = (_FLOOR_REL * float(np.sqrt(np.mean(t * t)))) ** 2
        bic = m * math.log(max(sse / m, floor)) + k * math.log(m)
    return r2, math.sqrt(sse / m), pct, bic


def _fit_one(family: str, d: _Data, Wb: np.ndarray, *, table_source: dict[str, Any] | None = None) -> FamilyFit:
    n_boot = Wb.shape[0] - 1
    notes: list[str] = []
    if family == "table":
        return _fit_table(d, table_source)
    extra: list[int] | None = None
    if family == "two-feature":
        extra, notes = _two_feature_columns(d)
    P = _fit_params(family, d, Wb, extra)
    names = _PARAMS[family]
    est = P[0]
    if family == "two-feature":
        if not est[0] > 0:
            raise ModelError("two-feature fit", "c_ms = 0", "no fit with a positive intercept: the data are not "
                             "of the form c + a·max(0, P + D − b0) + decode·D + kv·K + q·P²")
    params: dict[str, float | int] = {}
    for i, name in enumerate(names):
        params[name] = int(round(est[i])) if name == "b0" else float(est[i])
    model = _model(family, params)
    pred = model.batch_ms(d.P, d.D, d.K) if family == "two-feature" else model.tokens_ms(d.n)
    k = len(names) if family != "two-feature" else 3 + len(extra or [])
    r2, rmse, pct, bic = _stats(d.t, np.asarray(pred, float), k)
    intervals: dict[str, tuple[float, float]] = {}
    if n_boot:
        boot = P[1:]
        for i, name in enumerate(names):
            if family == "two-feature" and i >= 3 and (i - 3) not in (extra or []):
                continue
            lo, hi = np.percentile(boot[:, i], [2.5, 97.5])
            intervals[name] = (int(round(lo)), int(round(hi))) if name == "b0" else (float(lo), float(hi))
    else:
        notes.append("no bootstrap (n_boot = 0): no intervals")
    return FamilyFit(family, params, intervals, r2, rmse, pct, bic, k, model, d.m, n_boot, tuple(notes))


def _fit_table(d: _Data, source: dict[str, Any] | None) -> FamilyFit:
    notes: list[str] = []
    u, inv, cnt = np.unique(d.n, return_inverse=True, return_counts=True)
    if u.size < d.m:
        comp = np.column_stack([d.P, d.D, d.K])
        for g in np.flatnonzero(cnt > 1):
            rows = comp[inv == g]
            if np.any(rows != rows[0]):
                raise ModelError("family", "table", f"cannot represent these rows: token count {u[g]:g} appears with "
                                 "different batch compositions (filter the profile by scenario)")
        tm = np.bincount(inv, weights=d.t) / cnt
        notes.append(f"{int(np.sum(cnt > 1))} token counts measured more than once: their times are averaged")
        source = None
    else:
        tm = np.bincount(inv, weights=d.t)
    model = B.Table(u, tm, source=source)
    pred = model.tokens_ms(d.n)
    r2, rmse, pct, _ = _stats(d.t, np.asarray(pred, float), None)
    notes.append("interpolant through the measured points: not a candidate for BIC selection")
    params = {"points": int(u.size), "tokens_min": float(u[0]), "tokens_max": float(u[-1])}
    return FamilyFit("table", params, {}, r2, rmse, pct, None, int(u.size), model, d.m, 0, tuple(notes))


def _check_family(name: Any) -> str:
    if name not in FAMILIES:
        raise ModelError("family", name, f"must be one of {list(FAMILIES)}")
    return name


def fit_family(family: str, n: Any, t: Any, P: Any = None, D: Any = None, K: Any = None, *,
               n_boot: int = 200, seed: int | np.random.Generator = 0) -> FamilyFit:
    """Fit one batch-time family to plain arrays by non-negative least squares.

    Args:
        family: one of :data:`FAMILIES`.
        n: tokens per batch; t: measured batch times in ms (> 0).
        P, D, K: optional composition (prefill tokens, decode requests, their total KV context in
            tokens; P + D must equal n). Without them every row is a prefill of n tokens.
        n_boot: bootstrap replicates for the 95 % intervals (0: none).
        seed: integer seed or a numpy Generator; the same seed gives identical numbers.

    Raises:
        ModelError: unknown family, empty or invalid data, n_boot < 0, bad seed.
    """
    family = _check_family(family)
    n_boot = _check_n_boot(n_boot)
    d = _make_data(n, t, P, D, K)
    rng, _ = _rng(seed)
    Wb = _boot_weights(d.m, n_boot if family != "table" else 0, rng)
    return _fit_one(family, d, Wb)


# ----------------------------------------------------------------------------------- profile


def _select(profile: Profile, scenario: str | Sequence[str] | None, max_tokens: int | None) -> Profile:
    mask = np.ones(len(profile), dtype=bool)
    if scenario is not None:
        wanted = {scenario} if isinstance(scenario, str) else set(scenario)
        known = set(profile.scenario.tolist())
        unknown = wanted - known
        if unknown:
            raise ModelError("scenario", sorted(unknown)[0], f"must be one of {sorted(known)}")
        mask &= np.isin(profile.scenario, list(wanted))
    if max_tokens is not None:
        mask &= profile.tokens <= max_tokens
    if not np.any(mask):
        raise ModelError("max_tokens", max_tokens, f"leaves no rows of {profile.path} (smallest token count "
                         f"{profile.tokens.min():g})")
    if np.all(mask):
        return profile
    return Profile({k: v[mask] for k, v in profile.columns.items()}, profile.scenario[mask], profile.path)


def fit_profile(path_or_profile: str | Path | Profile, scenario: str | list[str] | None = None,
                families: list[str] | None = None, n_boot: int = 200,
                seed: int | np.random.Generator = 0, max_tokens: int | None = None) -> CalibrationResult:
    """Fit the batch-time families to a profile CSV (or :class:`Profile`) and choose one by BIC.

    Args:
        path_or_profile: profile CSV (columns of ``derived_batch_time_*.csv``) or a read profile.
        scenario: keep only rows of this scenario (or these scenarios).
        families: families to fit (default: all of :data:`FAMILIES`; the table is then skipped, with a
            note, when a token count appears with different batch compositions).
        n_boot: bootstrap replicates (rows resampled with replacement; the same replicates for every
            family); 0 for none.
        seed: integer seed or numpy Generator.
        max_tokens: keep only rows with at most this many tokens per batch.

    Returns:
        :class:`CalibrationResult`; times in ms.

    Raises:
        ModelError: missing/invalid file, unknown scenario or family, no rows left, n_boot < 0.
    """
    n_boot = _check_n_boot(n_boot)
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer))
                                   or max_tokens < 1):
        raise ModelError("max_tokens", max_tokens, "must be an integer >= 1 or None")
    if families is None:
        fams, explicit = list(FAMILIES), False
    else:
        if isinstance(families, str) or not families:
            raise ModelError("families", families, f"must be a non-empty list of {list(FAMILIES)}")
        fams, explicit = [], True
        for f in families:
            _check_family(f)
            if f not in fams:
                fams.append(f)
    rng, seed_int = _rng(seed)
    if isinstance(path_or_profile, Profile):
        prof = _select(path_or_profile, scenario, max_tokens)
    else:
        prof = _select(read_profile(path_or_profile, scenario), None, max_tokens)
    if len(prof) == 0:
        raise ModelError("profile", prof.path, "has no rows")
    cols = prof.columns
    has_comp = "decode_tokens" in cols or "prefill_tokens" in cols
    P, D, K = prof.composition()
    d = _make_data(prof.tokens, prof.times_ms, P if has_comp else None, D if has_comp else None,
                   K if has_comp else None)
    notes: list[str] = []
    # can token-count families represent these rows? (each token count with one composition)
    u, inv = np.unique(d.n, return_inverse=True)
    comp = np.column_stack([d.P, d.D, d.K])
    first = np.zeros(u.size, dtype=np.int64)
    first[inv[::-1]] = np.arange(d.m)[::-1]
    token_ok = bool(np.all(comp == comp[first[inv]]))
    if not token_ok:
        notes.append("some token counts appear with different batch compositions: token-count families are "
                     "fitted for comparison but cannot represent the data (not eligible)")
        if "table" in fams:
            if explicit:
                raise ModelError("families", "table", "cannot represent these rows: a token count appears with "
                                 "different batch compositions (filter the profile by scenario)")
            fams.remove("table")
            notes.append("table skipped: it needs one time per token count and composition")
    scen = None if scenario is None else ((scenario,) if isinstance(scenario, str) else tuple(scenario))
    table_source = None
    if not isinstance(path_or_profile, Profile) and max_tokens is None:
        table_source = {"file": prof.path}
        if scen is not None:
            table_source["scenario"] = scen[0] if len(scen) == 1 else list(scen)
    Wb = _boot_weights(d.m, n_boot, rng)
    fits: list[FamilyFit] = []
    for f in FAMILIES:
        if f not in fams:
            continue
        if f == "table":
            try:
                fits.append(_fit_table(d, table_source))
            except ModelError as e:
                if explicit:
                    raise
                notes.append(f"table skipped: {e}")
            continue
        fits.append(_fit_one(f, d, Wb))
    eligible = [f for f in fits if f.bic is not None and (f.family == "two-feature" or token_ok)]
    if eligible:
        chosen = min(eligible, key=lambda f: (f.bic, f.n_params))
    elif fits:
        chosen = fits[0]
        notes.append(f"no family eligible for BIC selection: {chosen.family} reported as chosen")
    else:  # pragma: no cover - fams is never empty here
        raise ModelError("families", families, "no family could be fitted")
    return CalibrationResult(prof.path, scen, d.m, tuple(fits), chosen, SELECTION_RULE, seed_int, n_boot,
                             max_tokens, tuple(notes))
