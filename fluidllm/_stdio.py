"""Keep ``--json`` output to one object: native libraries must not write into stdout meanwhile."""
from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Iterator

__all__ = ["json_stdout"]


@contextlib.contextmanager
def json_stdout() -> Iterator[None]:
    """While the body runs, file descriptor 1 points at stderr and ``sys.stdout`` at the real stdout.

    Native solver libraries (HiGHS 1.16 prints a banner on its first solve) write to fd 1 directly,
    which would put text before ``--json``'s object; Python code printing through ``sys.stdout`` still
    reaches the real stdout. Where ``sys.stdout`` is not fd 1 (a test's capture, an embedding host)
    nothing is changed.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        fd = -1
    if fd != 1:
        yield
        return
    old = sys.stdout
    old.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = open(saved, "w", encoding=getattr(old, "encoding", None) or "utf-8", closefd=False)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = old
        os.dup2(saved, 1)
        os.close(saved)
