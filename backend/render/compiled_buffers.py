"""Work arrays of the compiled rasterizer kept from one render to the next.

A frame of 1M Gaussians needs ~100 MB of per-Gaussian and per-tile arrays; fresh ones cost a page fault
per 4 KiB on first touch (~25 ms of CPU a frame at 1M, a tenth of the frame). One idle set is kept per
process and grows to the largest frame rendered; a render running beside another (threads) gets a set of
its own, dropped when it ends. `free()` hands the memory back (the render worker calls it when idle).
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
        self._idle: dict[str, np.ndarray] = {}
        self._generation = 0  # free() during a render: that render's arrays are not kept

    @contextmanager
    def borrow(self) -> Iterator[Take]:
        """Yields take(name, shape, dtype): an uninitialised C-contiguous array, reusing the buffer of that
        name where it is large enough; valid until the block ends."""
        with self._lock:
            arrays, self._idle, generation = self._idle, {}, self._generation
        try:
            yield lambda name, shape, dtype: _take(arrays, name, shape, dtype)
        finally:
            with self._lock:
                if generation == self._generation:
                    self._idle = arrays

    def free(self) -> int:
        """Drop the idle arrays; returns the bytes dropped."""
        with self._lock:
            dropped = sum(a.nbytes for a in self._idle.values())
            self._idle, self._generation = {}, self._generation + 1
        return dropped

    def held_bytes(self) -> int:
        with self._lock:
            return sum(a.nbytes for a in self._idle.values())


def _take(arrays: dict[str, np.ndarray], name: str, shape: tuple, dtype: type) -> np.ndarray:
    size = math.prod(shape)
    buffer = arrays.get(name)
    if buffer is None or buffer.dtype != dtype or buffer.size < size:
        buffer = arrays[name] = np.empty(size, dtype)
    return buffer[:size].reshape(shape)
