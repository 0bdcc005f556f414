"""Run a sweep: every point not yet in the results store, on local worker processes or a Dask cluster.

Where the points run:

- no scheduler (and no ``FLUIDLLM_DASK_SCHEDULER`` in the environment): ``workers`` local worker
  processes (default: one per CPU; ``workers=1`` computes in this process, no pool);
- ``scheduler="tcp://HOST:PORT"`` (or that environment variable): the tasks go to an existing
  ``dask.distributed`` cluster; its workers need fluidllm installed, nothing else (the built model
  travels with each task, so the model's files need not exist on the workers).
  ``scheduler="local"`` forces local processes even when the variable is set.

Whatever runs them, the results are written here, by this process, one point at a time as each
finishes (see :mod:`fluidllm.sweep.store`), so a killed sweep started again computes only what is
missing. Each point's seed depends only on the sweep seed and its overrides, so results do not depend
on the scheduler or the order of completion.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import ModelError, integer
from . import store
from .analyses import compute_point
from .spec import Point, SweepSpec, apply_overrides, build_model, code_fingerprint, load_sweep

__all__ = ["ENV_SCHEDULER", "SweepResult", "run_sweep"]

ENV_SCHEDULER = "FLUIDLLM_DASK_SCHEDULER"


@dataclass(frozen=True)
class SweepResult:
    """What one :func:`run_sweep` call did.

    Attributes:
        points_total: distinct points of the sweep. ``points_computed``: computed by this call.
        points_reused: found finished in the store. ``points_failed``: points with an analysis that
            rejected the point (its ``error`` column is set; counted in computed or reused).
        results: the results folder. ``scheduler``: ``"local"``, ``"in-process"`` or the Dask address.
        workers: local worker processes used (0 on Dask). ``wall_s``: wall-clock seconds of the call.
        point_ids: the sweep's point ids, in expansion order (``load_results(results, point_ids)``).
    """

    points_total: int
    points_computed: int
    points_reused: int
    points_failed: int
    results: str
    scheduler: str
    workers: int
    wall_s: float
    point_ids: tuple[str, ...] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``points_total``, ``points_computed``, ``points_reused``, ``results`` (the
        contract) plus ``points_failed``, ``scheduler``, ``workers``, ``wall_s``."""
        return {"points_total": self.points_total, "points_computed": self.points_computed,
                "points_reused": self.points_reused, "points_failed": self.points_failed, "results": self.results,
                "scheduler": self.scheduler, "workers": self.workers, "wall_s": self.wall_s}

    def table(self) -> str:
        rate = self.points_computed / self.wall_s if self.wall_s > 0 else 0.0
        return (f"sweep: {self.points_total} points: {self.points_computed} computed, {self.points_reused} reused"
                f"{f', {self.points_failed} with errors' if self.points_failed else ''}\n"
                f"  on {self.scheduler}{f' ({self.workers} workers)' if self.workers > 1 else ''} in "
                f"{self.wall_s:.3g} s ({rate:.3g} points/s)\n  results: {self.results}")


def _task(spec: SweepSpec, pt: Point, model: Any) -> dict[str, Any]:
    return {"model": model, "load": pt.load, "analyses": spec.analyses, "replications": spec.replications,
            "horizon_s": spec.horizon_s, "seed": pt.seed,
            "options": spec.options}


def _in_process(tasks: dict[str, dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for pid, t in tasks.items():
        yield pid, compute_point(t)


def _watch_parent(parent: int) -> None:
    """Pool worker initializer: exit as soon as the sweep process is gone (killed with SIGKILL, say),
    instead of computing points nobody will store. The workers' task pipe never reports EOF (each
    worker holds both of its ends), so they would otherwise outlive the sweep."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="fluidllm-sweep-parent-watch", daemon=True).start()


def _pool(tasks: dict[str, dict[str, Any]], workers: int) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    # spawn: the parent may hold threads (tqdm, BLAS) that fork would copy mid-lock
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_watch_parent, initargs=(os.getpid(),))
    try:
        pending = {ex.submit(compute_point, t): pid for pid, t in tasks.items()}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield pending.pop(f), f.result()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _dask(tasks: dict[str, dict[str, Any]], address: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    try:
        from distributed import Client, as_completed
    except ImportError as e:  # pragma: no cover - distributed is in the sweep extra
        raise ModelError("scheduler", address, f"needs dask[distributed] installed ({e})") from None
    try:
        client = Client(address, timeout=30, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise ModelError("scheduler", address, f"no Dask scheduler answered there ({e})") from None
    try:
        futures = {client.submit(compute_point, t, key=f"fluidllm-point-{pid}", pure=False): pid
                   for pid, t in tasks.items()}
        for f in as_completed(list(futures), loop=client.loop):
            yield futures[f], f.result()
    finally:
        client.close()


class _NoBar:
    def __init__(self, *a: Any, **k: Any) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass


def _bar(show: bool) -> Any:
    if not show:
        return _NoBar
    try:
        from tqdm import tqdm
    except ImportError as e:
        raise ModelError("progress", True, f"needs tqdm installed ({e})") from None
    return tqdm


def _resolve_scheduler(scheduler: str | None) -> str | None:
    s = os.environ.get(ENV_SCHEDULER) if scheduler is None else scheduler
    if s is None or s.strip() in ("", "local"):
        return None
    s = s.strip()
    if "://" not in s:
        raise ModelError("scheduler", s, "must be a Dask scheduler address such as tcp://127.0.0.1:8786, or 'local'")
    return s


def run_sweep(spec: SweepSpec | str | Path, *, results: str | Path | None = None, scheduler: str | None = None,
              workers: int | None = None, progress: bool | None = None) -> SweepResult:
    """Compute every point of ``spec`` that ``results`` does not hold yet; returns the counts.

    Args:
        spec: a :class:`SweepSpec` or a sweep file path.
        results: the results folder (default ``<stem>.results/`` next to the sweep file).
        scheduler: a Dask scheduler address (``tcp://HOST:PORT``); None reads ``FLUIDLLM_DASK_SCHEDULER``;
            ``"local"`` or neither: local worker processes.
        workers: local worker processes (default: CPU count, at most the points to compute; 1 = this
            process). Ignored on Dask.
        progress: a tqdm bar on stderr (points done, rate, ETA); None: only when stderr is a terminal.

    Raises:
        ModelError: a point whose model is invalid (before anything is computed), a bad scheduler
            address or worker count.
    """
    t0 = time.perf_counter()
    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    folder = Path(results) if results is not None else spec.default_results
    address = _resolve_scheduler(scheduler)
    if workers is not None:
        workers = integer(workers, "workers", minimum=1)
    store.clean_temp(folder)
    have = store.stored_ids(folder)
    todo = [p for p in spec.points if p.point_id not in have]
    # build every model first: a bad value fails now, named, not after an hour of other points
    base_dir = spec.model_path.parent
    tasks = {p.point_id: _task(spec, p, build_model(apply_overrides(spec.base_doc, p.params), base_dir)) for p in todo}
    param_types = {f: store._param_type([p.params[f] for p in spec.points if f in p.params]) for f in spec.fields}
    store.write_manifest(folder, {**spec.to_dict(), "code_fingerprint": code_fingerprint(),
                                  "point_ids": [p.point_id for p in spec.points]})
    by_id = {p.point_id: p for p in spec.points}
    if address is not None:
        runner, sched, nw = _dask(tasks, address), address, 0
    else:
        nw = min(workers or os.cpu_count() or 1, max(len(tasks), 1))
        runner = _in_process(tasks) if nw == 1 else _pool(tasks, nw)
        sched = "in-process" if nw == 1 else "local"
    show = sys.stderr.isatty() if progress is None else bool(progress)
    failed = 0
    with _bar(show)(total=len(spec.points), initial=len(spec.points) - len(todo), unit="point", file=sys.stderr,
              disable=not show, dynamic_ncols=True, desc="sweep") as bar:
        if tasks:
            for pid, rows in runner:
                store.write_point(folder, pid, by_id[pid].params, rows, param_types)
                failed += any(r.get("error") for r in rows)
                bar.update(1)
    if have:
        # reused points with errors: read their error column only
        import pyarrow.parquet as pq

        for p in spec.points:
            if p.point_id in have:
                errs = pq.read_table(folder / (p.point_id + store.SUFFIX), columns=["error"]).column("error")
                failed += errs.null_count < len(errs)
    return SweepResult(points_total=len(spec.points), points_computed=len(tasks),
                       points_reused=len(spec.points) - len(tasks), points_failed=failed, results=str(folder.resolve()),
                       scheduler=sched, workers=nw, wall_s=time.perf_counter() - t0,
                       point_ids=tuple(p.point_id for p in spec.points))
