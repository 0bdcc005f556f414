"""GPU profiler: time real batched forward passes of a transformer decoder, write a profile CSV.

What is timed: ``layers`` decoder layers (of the shape's ``n_layers``) with random weights (nothing is
downloaded), each layer

* RMSNorm → fused QKV projection → RoPE (optional)                 — *linear* segment 1
* KV-cache write of the new tokens, causal attention of the prefill chunk over itself, and attention
  of every decode token over its request's cached context (contiguous or paged KV)  — *attention*
* output projection → residual → RMSNorm → SwiGLU MLP → residual   — *linear* segment 2

on one batch = the concatenated prefill tokens of one prompt (prior context 0, as in the shared
``derived_batch_time_*.csv`` tables) plus one token of each of D decode requests whose context is
``kv_context`` tokens each. The three segments of every layer are bracketed by timing marks inside
the same pass (``torch.cuda.Event`` on CUDA, ``time.perf_counter`` on the CPU, where the ops are
synchronous), so ``linear_ms`` and ``attention_ms`` are measured, not modelled; the marks tile the pass,
so in every pass linear + attention = the whole pass. Each grid point runs ``warmup`` untimed passes,
then ``repeats`` timed ones; the CSV holds the median of each part and, as the shared tables define it,
``iteration_ms`` = linear_ms + attention_ms + tp_comm_ms (robust to a preempted pass spoiling one part);
the median whole pass and its interquartile range are reported beside (``pass_ms``, ``pass_ms_iqr``).

Scaling assumption (``layers`` < ``n_layers``): every layer of a decoder does the same work, so the
full model's time is ``n_layers / layers`` times the timed layers' time (the embedding, the LM head and
sampling are not included — as in the shared tables, where they are ≈ 0.1–0.5 ms). Single GPU, so
``tp_comm_ms`` is 0. ``kv_cache_gb_per_gpu`` is the full model's KV footprint of the batch
(all ``n_layers``; K and V; the profile dtype), in GB = 1e9 bytes.

The KV cache of the timed layers is allocated once per grid point; when one cache per timed layer
would exceed ``max_kv_gb`` the timed layers share one (a cache that large is far beyond any L2 cache,
so the reads still come from HBM); a point whose single-layer cache exceeds ``max_kv_gb`` is skipped
and listed in ``skipped``.

Needs PyTorch (``pip install fluidllm[gpu]``); imported only when a profile is taken.
"""
from __future__ import annotations

import csv
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ModelError

__all__ = ["Shape", "SHAPES", "GridPoint", "ProfileRow", "ProfileRun", "parse_grid", "default_grid",
           "profile_model", "CSV_COLUMNS", "DTYPES", "KV_LAYOUTS"]

#: columns of the written CSV: those of ``../shared/calibration/derived_batch_time_*.csv``.
CSV_COLUMNS = ("scenario", "tokens_in_batch", "prefill_tokens", "decode_tokens", "kv_context", "linear_ms",
               "attention_ms", "tp_comm_ms", "iteration_ms", "kv_cache_gb_per_gpu", "attention_source")
DTYPES = ("float32", "float16", "bfloat16")
KV_LAYOUTS = ("contiguous", "paged")
PAGE_TOKENS = 16          # tokens per KV page (vLLM's default block size)


@dataclass(frozen=True)
class Shape:
    """A decoder's shape: ``n_layers`` layers of width ``hidden`` with ``heads`` query heads and
    ``kv_heads`` key/value heads (GQA when fewer), SwiGLU MLP of width ``mlp``."""

    name: str
    n_layers: int
    hidden: int
    heads: int
    kv_heads: int
    mlp: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Bytes of K and V per token over all layers."""
        return 2 * self.n_layers * self.kv_heads * self.head_dim * dtype_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n_layers": self.n_layers, "hidden": self.hidden, "heads": self.heads,
                "kv_heads": self.kv_heads, "mlp": self.mlp}


SHAPES: dict[str, Shape] = {
    "tiny": Shape("tiny", 2, 128, 4, 2, 344),                      # CPU / CI
    "llama-2-7b": Shape("llama-2-7b", 32, 4096, 32, 32, 11008),
    "codellama-34b": Shape("codellama-34b", 48, 8192, 64, 8, 22016),
}


@dataclass(frozen=True)
class GridPoint:
    """One batch composition: ``prefill_tokens`` of one prompt + ``decode_tokens`` decode requests with
    ``kv_context`` cached tokens each."""

    scenario: str
    prefill_tokens: int
    decode_tokens: int
    kv_context: int

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens


def _ints(text: str, field_: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ModelError(field_, text, "must be comma-separated integers") from None
    if not vals or any(v < 1 for v in vals):
        raise ModelError(field_, text, "must be a non-empty list of integers >= 1")
    return vals


_NAMED_GRIDS = {
    # a few points, fast on a CPU with the tiny shape (the tests use it)
    "quick": "prefill:16,64,256,512;decode@256:1,8,32;mixed@256:128+8",
    # the shared tables' scenarios (prefill 1..4096, decode 1..512 at contexts 512 and 2048, Sarathi chunks)
    "standard": ("prefill:1,2,4,8,16,32,48,64,96,128,160,192,224,256,320,384,448,512,640,768,896,1024,"
                 "1280,1536,1792,2048,2560,3072,3584,4096;"
                 "decode@512:1,2,4,8,16,32,48,64,96,128,192,256,384,512;"
                 "decode@2048:1,2,4,8,16,32,48,64,96,128,192,256,384,512;"
                 "mixed@1024:256+8,256+32,512+8,512+32,512+128,1024+8,1024+32,1024+128,2048+8,2048+32,2048+128"),
}


def parse_grid(text: str) -> list[GridPoint]:
    """Grid points from ``quick`` / ``standard`` or a spec of ``;``-separated parts:
    ``prefill:P1,P2,...`` (one prompt of P tokens), ``decode@KV:D1,D2,...`` (D decode requests with KV
    tokens of context each), ``mixed@KV:P+D,...`` (a P-token chunk plus D decodes at context KV).
    Scenario names follow the shared tables: ``prefill_only``, ``decode_only_kv{KV}``,
    ``mixed_chunk_plus_decode``.

    Raises:
        ModelError: an unknown part or a malformed number (named).
    """
    text = _NAMED_GRIDS.get(text.strip(), text)
    pts: list[GridPoint] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        head, sep, body = part.partition(":")
        if not sep:
            raise ModelError("grid", part, "must be prefill:..., decode@KV:... or mixed@KV:... "
                             f"(or one of {sorted(_NAMED_GRIDS)})")
        kind, _, kv_text = head.partition("@")
        kind = kind.strip()
        if kind == "prefill":
            if kv_text:
                raise ModelError("grid", part, "prefill rows have no @KV (prior context is 0)")
            pts += [GridPoint("prefill_only", p, 0, 0) for p in _ints(body, "grid prefill")]
            continue
        if kind not in ("decode", "mixed"):
            raise ModelError("grid", part, "must start with prefill, decode@KV or mixed@KV")
        (kv,) = _ints(kv_text, f"grid {kind} @KV") if kv_text else (None,)
        if kv is None:
            raise ModelError("grid", part, f"{kind} needs a context length: {kind}@KV:...")
        if kind == "decode":
            pts += [GridPoint(f"decode_only_kv{kv}", 0, d, kv) for d in _ints(body, "grid decode")]
        else:
            for item in (x.strip() for x in body.split(",") if x.strip()):
                p_text, plus, d_text = item.partition("+")
                if not plus:
                    raise ModelError("grid mixed", item, "must be P+D (chunk tokens + decode requests)")
                (p,), (d,) = _ints(p_text, "grid mixed P"), _ints(d_text, "grid mixed D")
                pts.append(GridPoint("mixed_chunk_plus_decode", p, d, kv))
    if not pts:
        raise ModelError("grid", text, "has no points")
    return pts


def default_grid(shape: str) -> str:
    """``quick`` for the tiny shape, ``standard`` for the real ones."""
    return "quick" if shape == "tiny" else "standard"


@dataclass(frozen=True)
class ProfileRow:
    """One grid point's medians (ms, full model after layer scaling): linear and attention parts, their
    sum ``iteration_ms``, and the median whole pass ``pass_ms`` with its interquartile range."""

    point: GridPoint
    linear_ms: float
    attention_ms: float
    pass_ms: float
    pass_ms_iqr: float
    kv_cache_gb_per_gpu: float
    attention_source: str
    shared_kv: bool = False

    @property
    def iteration_ms(self) -> float:
        """linear_ms + attention_ms (+ tp_comm_ms = 0), as in the shared tables."""
        return self.linear_ms + self.attention_ms

    def csv_row(self) -> dict[str, Any]:
        p = self.point
        return {"scenario": p.scenario, "tokens_in_batch": p.tokens, "prefill_tokens": p.prefill_tokens,
                "decode_tokens": p.decode_tokens, "kv_context": p.kv_context,
                "linear_ms": _sig(self.linear_ms), "attention_ms": _sig(self.attention_ms),
                "tp_comm_ms": 0.0, "iteration_ms": _sig(self.iteration_ms),
                "kv_cache_gb_per_gpu": _sig(self.kv_cache_gb_per_gpu), "attention_source": self.attention_source}


def _sig(x: float) -> float:
    """x to 6 significant digits (the CSV's precision; timing noise is far larger)."""
    return float(f"{x:.6g}")


@dataclass(frozen=True)
class ProfileRun:
    """A finished profile: rows, what was measured and how, and the grid points skipped (with why)."""

    shape: Shape
    layers_timed: int
    device: str
    device_name: str
    dtype: str
    kv_layout: str
    rope: bool
    warmup: int
    repeats: int
    torch_version: str
    rows: tuple[ProfileRow, ...]
    skipped: tuple[tuple[GridPoint, str], ...] = ()
    wall_s: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def layer_scale(self) -> float:
        return self.shape.n_layers / self.layers_timed

    def write_csv(self, path: str | Path) -> Path:
        """Write the rows in :data:`CSV_COLUMNS` (parent folders created); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
            w.writeheader()
            for r in self.rows:
                w.writerow(r.csv_row())
        return p

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary: settings, rows (CSV columns + ``pass_ms``, ``pass_ms_iqr``), skipped points."""
        return {"shape": self.shape.to_dict(), "layers_timed": self.layers_timed, "layer_scale": self.layer_scale,
                "device": self.device, "device_name": self.device_name, "dtype": self.dtype,
                "kv_layout": self.kv_layout, "rope": self.rope, "warmup": self.warmup, "repeats": self.repeats,
                "torch": self.torch_version, "wall_s": self.wall_s,
                "rows": [{**r.csv_row(), "pass_ms": _sig(r.pass_ms), "pass_ms_iqr": _sig(r.pass_ms_iqr),
                          "shared_kv": r.shared_kv}
                         for r in self.rows],
                "skipped": [{"scenario": g.scenario, "prefill_tokens": g.prefill_tokens,
                             "decode_tokens": g.decode_tokens, "kv_context": g.kv_context, "why": why}
                            for g, why in self.skipped],
                "notes": list(self.notes)}

    def table(self) -> str:
        """Readable text table of the rows."""
        head = (f"{'scenario':<24} {'P':>5} {'D':>4} {'kv':>5} {'linear ms':>10} {'attn ms':>9} "
                f"{'iter ms':>9} {'pass ms':>9} {'IQR ms':>8} {'KV GB':>7}")
        lines = [f"{self.shape.name} ({self.layers_timed} of {self.shape.n_layers} layers timed, "
                 f"x{self.layer_scale:g}) "
                 f"on {self.device_name} [{self.device}], {self.dtype}, {self.kv_layout} KV, "
                 f"warm-up {self.warmup}, median of {self.repeats}, torch {self.torch_version}", head, "-" * len(head)]
        for r in self.rows:
            p = r.point
            lines.append(f"{p.scenario:<24} {p.prefill_tokens:>5} {p.decode_tokens:>4} {p.kv_context:>5} "
                         f"{r.linear_ms:>10.4g} {r.attention_ms:>9.4g} {r.iteration_ms:>9.4g} {r.pass_ms:>9.4g} "
                         f"{r.pass_ms_iqr:>8.3g} {r.kv_cache_gb_per_gpu:>7.3g}")
        for g, why in self.skipped:
            lines.append(f"skipped {g.scenario} P={g.prefill_tokens} D={g.decode_tokens} kv={g.kv_context}: {why}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------- torch parts


def import_torch() -> Any:
    """``torch``, or a ModelError saying how to install it."""
    try:
        import torch  # type: ignore[import-not-found]
    except ImportError:
        raise ModelError("torch", "not installed",
                         "the GPU profiler needs PyTorch: pip install fluidllm[gpu]") from None
    return torch


def _resolve(device: str, dtype: str | None, torch: Any) -> tuple[Any, Any, str]:
    if not isinstance(device, str) or not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise ModelError("device", device, "must be cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError("device", device, "no CUDA GPU is visible to torch (torch.cuda.is_available() is "
                             "False); use --device cpu")
        dtype = dtype or "float16"
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        dtype = dtype or "float32"
        if dtype != "float32":
            raise ModelError("dtype", dtype, "must be float32 on the CPU (float16/bfloat16 are for CUDA)")
        import platform

        name = f"CPU {platform.machine()} ({torch.get_num_threads()} threads)"
    if dtype not in DTYPES:
        raise ModelError("dtype", dtype, f"must be one of {list(DTYPES)}")
    return torch.device(device), getattr(torch, dtype), name


class _Timer:
    """Marks inside one pass: CUDA events (read after one synchronize) or perf_counter on the CPU."""

    def __init__(self, torch: Any, dev: Any, n_marks: int) -> None:
        self.cuda = dev.type == "cuda"
        self.torch = torch
        if self.cuda:
            self.events = [torch.cuda.Event(enable_timing=True) for _ in range(n_marks)]
        self.t = [0.0] * n_marks
        self.i = 0

    def reset(self) -> None:
        self.i = 0

    def mark(self) -> None:
        if self.cuda:
            self.events[self.i].record()
        else:
            self.t[self.i] = time.perf_counter()
        self.i += 1

    def gaps_ms(self) -> list[float]:
        """Milliseconds between consecutive marks."""
        if self.cuda:
            self.torch.cuda.synchronize()
            return [self.events[k].elapsed_time(self.events[k + 1]) for k in range(self.i - 1)]
        return [1e3 * (self.t[k + 1] - self.t[k]) for k in range(self.i - 1)]


class _Decoder:
    """``layers`` decoder layers with random weights (std 0.02, like an initialised Llama)."""

    def __init__(self, torch: Any, shape: Shape, layers: int, dev: Any, dt: Any, rope: bool, seed: int) -> None:
        self.torch, self.s, self.dev, self.dt, self.rope = torch, shape, dev, dt, rope
        # drawn on the device: a 17 GB KV cache (Llama-2-7B, 512 decodes at 2048 context, one layer)
        # drawn on the host first would take minutes
        g = torch.Generator(device=dev).manual_seed(seed)
        H, hd, kvh = shape.hidden, shape.head_dim, shape.kv_heads

        def w(*size: int) -> Any:
            return torch.randn(*size, generator=g, device=dev, dtype=dt) * 0.02

        qkv = (shape.heads + 2 * kvh) * hd
        self.layers = [dict(ln1=torch.ones(H, device=dev, dtype=dt), wqkv=w(H, qkv), wo=w(H, H),
                            ln2=torch.ones(H, device=dev, dtype=dt), wgu=w(H, 2 * shape.mlp), wd=w(shape.mlp, H))
                       for _ in range(layers)]
        self.gen = g
        major_minor = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
        self.native_gqa = major_minor >= (2, 5)

    def _sdpa(self, q: Any, k: Any, v: Any, causal: bool) -> Any:
        """Scaled dot-product attention; GQA by ``enable_gqa`` (torch >= 2.5) or by repeating the KV
        heads (query head h reads KV head h // (heads / kv_heads) either way)."""
        F = self.torch.nn.functional
        if k.shape[-3] == q.shape[-3]:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        if self.native_gqa:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        rep = q.shape[-3] // k.shape[-3]
        return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3),
                                              is_causal=causal)

    def _rms(self, x: Any, wt: Any) -> Any:
        t = self.torch
        xf = x.float()
        return (xf * t.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * wt

    def _rope(self, x: Any, pos: Any) -> Any:
        # x: (T, heads, hd); rotate pairs (first half, second half) by pos·θ_i, θ_i = 10000^(−2i/hd)
        t = self.torch
        hd = x.shape[-1]
        inv = 1.0 / (10000.0 ** (t.arange(0, hd, 2, device=x.device, dtype=t.float32) / hd))
        ang = pos[:, None].float() * inv[None, :]
        cos, sin = ang.cos()[:, None, :].to(x.dtype), ang.sin()[:, None, :].to(x.dtype)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return t.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def kv_cache(self, D: int, kv: int, layout: str, n_caches: int) -> list[Any]:
        """One cache per entry (``n_caches`` ≤ timed layers); contiguous: (K, V) each (D, kvh, kv+1, hd);
        paged: (pool of pages (N, kvh, PAGE, hd) for K and V, page table (D, pages per request))."""
        t, s = self.torch, self.s
        if D == 0:
            return [None] * n_caches
        out = []
        for _ in range(n_caches):
            if layout == "contiguous":
                size = (D, s.kv_heads, kv + 1, s.head_dim)
                out.append(tuple(t.randn(size, generator=self.gen, device=self.dev, dtype=self.dt) for _ in "kv"))
            else:
                per = -(-(kv + 1) // PAGE_TOKENS)
                n_pages = D * per
                size = (n_pages, s.kv_heads, PAGE_TOKENS, s.head_dim)
                pk, pv = (t.randn(size, generator=self.gen, device=self.dev, dtype=self.dt) for _ in "kv")
                # pages scattered at random, as after many admissions and frees
                table = t.randperm(n_pages, generator=self.gen, device=self.dev).reshape(D, per)
                out.append((pk, pv, table))
        return out

    def forward(self, x: Any, P: int, D: int, kv: int, caches: list[Any], layout: str, timer: _Timer) -> Any:
        t, s = self.torch, self.s
        F = t.nn.functional
        hd, nh, kvh = s.head_dim, s.heads, s.kv_heads
        T = P + D
        pos = t.cat([t.arange(P, device=self.dev), t.full((D,), kv, device=self.dev, dtype=t.int64)])
        timer.mark()
        for li, L in enumerate(self.layers):
            cache = caches[li % len(caches)]
            # --- linear 1: norm, QKV, RoPE
            h = self._rms(x, L["ln1"])
            qkv = h @ L["wqkv"]
            q, k, v = qkv.split([nh * hd, kvh * hd, kvh * hd], dim=-1)
            q, k, v = q.view(T, nh, hd), k.view(T, kvh, hd), v.view(T, kvh, hd)
            if self.rope:
                q, k = self._rope(q, pos), self._rope(k, pos)
            timer.mark()
            # --- attention: prefill chunk (causal, no prior context) and decodes over their caches
            outs = []
            if P:
                qp, kp, vp = (z[:P].transpose(0, 1).unsqueeze(0) for z in (q, k, v))
                outs.append(self._sdpa(qp, kp, vp, True).squeeze(0).transpose(0, 1).reshape(P, nh * hd))
            if D:
                qd = q[P:].unsqueeze(2)                                   # (D, nh, 1, hd)
                kd, vd = k[P:], v[P:]                                     # (D, kvh, hd)
                if layout == "contiguous":
                    ck, cv = cache
                    ck[:, :, kv] = kd                                     # write the new token's K, V
                    cv[:, :, kv] = vd
                    kk, vv = ck, cv
                else:
                    pk, pv, table = cache
                    page, off = table[:, kv // PAGE_TOKENS], kv % PAGE_TOKENS
                    pk[page, :, off] = kd
                    pv[page, :, off] = vd
                    # gather each request's pages into a contiguous view (a paged kernel reads the
                    # same bytes; here the gather is part of the measured attention time)
                    kk = pk[table].permute(0, 2, 1, 3, 4).reshape(D, kvh, -1, hd)[:, :, : kv + 1]
                    vv = pv[table].permute(0, 2, 1, 3, 4).reshape(D, kvh, -1, hd)[:, :, : kv + 1]
                outs.append(self._sdpa(qd, kk, vv, False).reshape(D, nh * hd))
            a = outs[0] if len(outs) == 1 else t.cat(outs)
            timer.mark()
            # --- linear 2: output projection, norm, SwiGLU MLP
            x = x + a @ L["wo"]
            h = self._rms(x, L["ln2"])
            gu = h @ L["wgu"]
            gt, up = gu.chunk(2, dim=-1)
            x = x + (F.silu(gt) * up) @ L["wd"]
            timer.mark()
        return x


def profile_model(shape: str | Shape = "tiny", *, device: str = "cpu", grid: str | Sequence[GridPoint] | None = None,
                  layers: int | None = None, dtype: str | None = None, kv_layout: str = "contiguous",
                  rope: bool = True, warmup: int = 2, repeats: int = 5, seed: int = 0,
                  max_kv_gb: float | None = None, threads: int | None = None, progress: Any = None) -> ProfileRun:
    """Time forward passes of ``shape`` over ``grid`` on ``device`` (see the module docstring).

    Args:
        shape: ``tiny``, ``llama-2-7b``, ``codellama-34b`` or a :class:`Shape`.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        grid: a grid spec for :func:`parse_grid` or points (default :func:`default_grid`).
        layers: decoder layers to time (default: all for ``tiny``, 2 otherwise); times are scaled by
            ``n_layers / layers``.
        dtype: ``float32`` (the CPU's only one), ``float16`` (CUDA default) or ``bfloat16``.
        kv_layout: ``contiguous`` or ``paged`` (pages of 16 tokens scattered at random).
        rope: apply rotary embeddings to Q and K.
        warmup, repeats: untimed and timed passes per grid point (medians reported).
        seed: weights, inputs and caches are drawn from this seed.
        max_kv_gb: KV cache allowed for the timed layers (default: half the free GPU memory; 2 GB on CPU).
        threads: CPU threads for torch while profiling (default: torch's setting; restored afterwards).
        progress: optional callable(str) told about each point.

    Raises:
        ModelError: no torch (``pip install fluidllm[gpu]``), unknown shape/device/dtype/layout, bad counts.
    """
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ModelError("shape", shape, f"must be one of {list(SHAPES)}")
        shp = SHAPES[shape]
    elif isinstance(shape, Shape):
        shp = shape
    else:
        raise ModelError("shape", shape, f"must be one of {list(SHAPES)} or a Shape")
    if shp.hidden % shp.heads or shp.heads % shp.kv_heads:
        raise ModelError("shape", shp.name, "needs hidden divisible by heads and heads by kv_heads")
    if kv_layout not in KV_LAYOUTS:
        raise ModelError("kv_layout", kv_layout, f"must be one of {list(KV_LAYOUTS)}")
    for name, val, lo in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise ModelError(name, val, f"must be an integer >= {lo}")
    if layers is None:
        layers = shp.n_layers if shp.name == "tiny" else min(2, shp.n_layers)
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= shp.n_layers:
        raise ModelError("layers", layers, f"must be an integer in 1..{shp.n_layers} (the shape's layers)")
    points = parse_grid(grid if grid is not None else default_grid(shp.name)) if grid is None or isinstance(grid, str) \
        else list(grid)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ModelError("threads", threads, "must be an integer >= 1")
    torch = import_torch()
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _profile(torch, shp, points, layers, device, dtype, kv_layout, rope, warmup, repeats, seed,
                        max_kv_gb, progress)
    finally:
        torch.set_num_threads(old_threads)


def _profile(torch: Any, shp: Shape, points: list[GridPoint], layers: int, device: str, dtype: str | None,
             kv_layout: str, rope: bool, warmup: int, repeats: int, seed: int, max_kv_gb: float | None,
             progress: Any) -> ProfileRun:
    dev, dt, dev_name = _resolve(device, dtype, torch)
    dtype_name = str(dt).replace("torch.", "")
    esize = torch.tensor([], dtype=dt).element_size()
    if max_kv_gb is None:
        if dev.type == "cuda":
            free, _ = torch.cuda.mem_get_info(dev)
            max_kv_gb = 0.5 * free / 1e9
        else:
            max_kv_gb = 2.0
    t_start = time.perf_counter()
    scale = shp.n_layers / layers
    src = (f"measured: torch {torch.__version__} SDPA, {kv_layout} KV, {dtype_name}, {dev_name}; "
           f"{layers} of {shp.n_layers} layers timed x{scale:g}; median of {repeats}")
    rows: list[ProfileRow] = []
    skipped: list[tuple[GridPoint, str]] = []
    with torch.inference_mode():
        model = _Decoder(torch, shp, layers, dev, dt, rope, seed)
        timer = _Timer(torch, dev, 1 + 3 * layers)
        per_layer_kv_gb = lambda g: (g.decode_tokens * (  # noqa: E731
            (g.kv_context + 1) if kv_layout == "contiguous" else PAGE_TOKENS * -(-(g.kv_context + 1) // PAGE_TOKENS))
            * 2 * shp.kv_heads * shp.head_dim * esize / 1e9)
        for g in points:
            one = per_layer_kv_gb(g)
            if one > max_kv_gb:
                skipped.append((g, f"one layer's KV cache {one:.3g} GB exceeds max_kv_gb {max_kv_gb:.3g} GB"))
                continue
            n_caches = layers if one * layers <= max_kv_gb else 1
            try:
                caches = model.kv_cache(g.decode_tokens, g.kv_context, kv_layout, n_caches)
                x = torch.randn(g.tokens, shp.hidden, generator=model.gen, device=dev, dtype=dt) * 0.5
                lin, att, tot = [], [], []
                for it in range(warmup + repeats):
                    timer.reset()
                    model.forward(x, g.prefill_tokens, g.decode_tokens, g.kv_context, caches, kv_layout, timer)
                    gaps = timer.gaps_ms()
                    if it < warmup:
                        continue
                    lin.append(scale * (sum(gaps[0::3]) + sum(gaps[2::3])))
                    att.append(scale * sum(gaps[1::3]))
                    tot.append(scale * sum(gaps))
            except RuntimeError as e:      # CUDA out of memory, mostly: report the point, keep going
                if "out of memory" not in str(e).lower():
                    raise
                skipped.append((g, f"out of memory: {str(e).splitlines()[0][:120]}"))
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            finally:
                caches = None
            q = statistics.quantiles(tot, n=4) if len(tot) >= 2 else [tot[0]] * 3
            kv_gb = (g.prefill_tokens + g.decode_tokens * (g.kv_context + 1)) * shp.kv_bytes_per_token(esize) / 1e9
            rows.append(ProfileRow(g, statistics.median(lin), statistics.median(att), statistics.median(tot),
                                   q[2] - q[0], kv_gb, src, n_caches < layers))
            if progress is not None:
                progress(f"{g.scenario} P={g.prefill_tokens} D={g.decode_tokens} kv={g.kv_context}: "
                         f"{rows[-1].iteration_ms:.4g} ms")
    notes = ["linear_ms, attention_ms: medians over passes of the sums of their segments x layer scale; "
             "iteration_ms = their sum; pass ms = median whole pass",
             "embedding, LM head and sampling are not timed; tp_comm_ms = 0 (one device)"]
    if any(r.shared_kv for r in rows):
        notes.append("some points share one KV cache among the timed layers (max_kv_gb)")
    if not math.isfinite(max_kv_gb):  # pragma: no cover - defensive
        notes.append("max_kv_gb is infinite")
    return ProfileRun(shp, layers, str(dev), dev_name, dtype_name, kv_layout, rope, warmup, repeats,
                      torch.__version__, tuple(rows), tuple(skipped), time.perf_counter() - t_start, tuple(notes))
