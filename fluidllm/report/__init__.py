"""Presentation: the figures of the single-engine story and the ``fluidllm paper`` report.

:mod:`fluidllm.report.figures` holds one function per figure (each returns a matplotlib Figure with
its numbers in ``fig.numbers``); :func:`write_report` runs every ``proofs_checks`` check and every
figure and writes ``README.md`` plus the PNGs. Imported lazily: matplotlib is loaded only here.
"""
from .paper import FIGURES, Report, write_report

__all__ = ["FIGURES", "Report", "write_report"]
