"""Parameter sweeps: a declarative grid / zipped lists / random draws over any model field, analyses
(capacity, simulate, stability, fluid) per point, run on local worker processes or a Dask cluster,
each finished point stored at once in a Parquet dataset so that a killed sweep resumes.

``load_sweep(path) -> SweepSpec``, ``run_sweep(spec, results=, scheduler=, workers=, progress=) ->
SweepResult``, ``load_results(folder) -> pandas.DataFrame``. File format: :mod:`fluidllm.sweep.spec`;
store layout and columns: :mod:`fluidllm.sweep.store`; result columns: :mod:`fluidllm.sweep.analyses`.
"""
from .analyses import OUT_COLUMNS, compute_point
from .runner import ENV_SCHEDULER, SweepResult, run_sweep
from .spec import ANALYSES, Point, SweepSpec, load_sweep, loads_sweep
from .store import load_results

__all__ = ["ANALYSES", "ENV_SCHEDULER", "OUT_COLUMNS", "Point", "SweepResult", "SweepSpec", "compute_point",
           "load_results", "load_sweep", "loads_sweep", "run_sweep"]
