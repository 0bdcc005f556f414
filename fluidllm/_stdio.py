"""Keep ``--json`` output to one object: native libraries must not write into stdout meanwhile."""
from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Iterator

__all__ = ["json_stdout", "silence_solver_banner"]


@contextlib.contextmanager
def json_stdout() -> Iterator[None]:
    """While the body runs, file descriptor 1 points at stderr; Python's ``sys.stdout`` still reaches
    the real stdout.

    Native solver libraries (HiGHS 1.16 prints a banner on its first solve) write to fd 1 directly,
    which would put text before ``--json``'s object. Where ``sys.stdout`` is fd 1 it is swapped for a
    writer on a copy of the original fd 1; where it is not (a test's capture, an embedding host) it
    is left alone and only the native writes move to stderr.
    """
    try:
        saved = os.dup(1)
    except OSError:                   # no fd 1 at all: nothing native can write there either
        yield
        return
    try:
        py_fd = sys.stdout.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        py_fd = -1
    old = sys.stdout
    old.flush()
    os.dup2(2, 1)
    if py_fd == 1:
        sys.stdout = open(saved, "w", encoding=getattr(old, "encoding", None) or "utf-8", closefd=False)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = old
        os.dup2(saved, 1)
        os.close(saved)


_BANNER_DONE = False


def silence_solver_banner() -> None:
    """Print HiGHS's once-per-process banner into /dev/null now, so that no later solve writes it
    into a user's output (highspy prints it when the first ``Highs`` object is made, straight to
    fd 1). Safe to call often; does nothing without highspy."""
    global _BANNER_DONE
    if _BANNER_DONE:
        return
    _BANNER_DONE = True
    try:
        import highspy
    except ImportError:                # pragma: no cover - highspy is a dependency
        return
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):      # pragma: no cover - no fd 1
        highspy.Highs()
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
