"""``python -m fluidllm.sweep SWEEP.toml [...]``: the same as ``fluidllm sweep``."""
import sys

from .cli import run

if __name__ == "__main__":  # spawned worker processes import this module as __mp_main__: run nothing there
    sys.exit(run())
