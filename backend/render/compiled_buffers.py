"""Work arrays of the compiled rasterizer, kept from one render to the next, and the turn-taking of renders.

A frame of 1M Gaussians needs ~80 MB of per-Gaussian and per-tile arrays; fresh ones cost a page fault per
4 KiB on first touch (~25 ms of CPU a frame at 1M, a tenth of the frame). The arrays grow to the largest
frame rendered until `free()` hands them back (the render worker calls it when idle).

Renders take turns (one lock per process): numba's workqueue threading layer aborts the whole process when
two threads launch parallel kernels at once, and each render uses every core anyway. So one set of arrays
is enough.
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

Take = Callable[[str, tuple, type], np.ndarray]


class WorkBuffers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrays: dict[str, np.ndarray] = {}

    @contextmanager
    def borrow(self) -> Iterator[Take]:
        """Waits for the render in progress, then yields take(name, shape, dtype): an uninitialised
        C-contiguous array, reusing the buffer of that name where it is large enough; valid until the block
        ends, when the next render may start."""
        with self._lock:
            yield self._take

    def free(self) -> int:
        """Drop the arrays (after the render in progress); returns the bytes dropped."""
        with self._lock:
            dropped = self._held()
            self._arrays = {}
        return dropped

    def held_bytes(self) -> int:
        with self._lock:
            return self._held()

    def _held(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())

    def _take(self, name: str, shape: tuple, dtype: type) -> np.ndarray:
        size = math.prod(shape)
        buffer = self._arrays.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.size < size:
            buffer = self._arrays[name] = np.empty(size, dtype)
        return buffer[:size].reshape(shape)
