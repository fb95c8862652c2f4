"""`warm-render`: compile the CPU rasterizer's kernels into the user's cache, so that no Generate or F12
pays numba's seconds of JIT. Install backend runs it once; running it again only loads the cache."""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No options: the cache folder is the user's (WONDERLAND_CACHE_DIR or NUMBA_CACHE_DIR override it)."""


def run(args) -> int:
    from backend.errors import EXIT_FAILURE
    from backend.render import compiled

    reason = compiled.unavailable_reason()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return EXIT_FAILURE
    seconds = compiled.warm()
    print(f"CPU rasterizer ready in {seconds:.1f} s (kernels cached in {compiled.kernel_cache_dir()})")
    return 0
