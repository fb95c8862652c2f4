"""The compiled rasterizer's work arrays kept between renders: reused, grown, handed back by free() (the
render worker calls it when idle), and renders taking turns."""
from __future__ import annotations

import numpy as np

from backend.render.compiled_buffers import WorkBuffers


def test_arrays_are_reused_grown_and_freed():
    pool = WorkBuffers()
    with pool.borrow() as take:
        first = take("rows", (10, 8), np.float32)
        assert first.shape == (10, 8) and first.flags.c_contiguous
    with pool.borrow() as take:
        smaller = take("rows", (5, 8), np.float32)
        assert np.shares_memory(first, smaller) and smaller.shape == (5, 8)
        other = take("boxes", (5, 4), np.int32)
        assert not np.shares_memory(other, smaller)
    with pool.borrow() as take:
        bigger = take("rows", (20, 8), np.float32)
        assert not np.shares_memory(first, bigger) and bigger.shape == (20, 8)
        assert take("rows", (0, 8), np.float32).shape == (0, 8)
    assert pool.held_bytes() == 20 * 8 * 4 + 5 * 4 * 4
    assert pool.free() == 20 * 8 * 4 + 5 * 4 * 4 and pool.held_bytes() == 0
    with pool.borrow() as take:
        assert not np.shares_memory(take("rows", (5, 8), np.float32), bigger)


def test_renders_take_turns_and_free_waits_for_the_render_in_progress():
    import threading
    import time
    pool, events = WorkBuffers(), []

    def second():
        with pool.borrow() as take:
            events.append(("second starts", take("rows", (4, 8), np.float32).shape))

    def free():
        pool.free()
        events.append("freed")

    with pool.borrow() as take:
        take("rows", (4, 8), np.float32)
        other = threading.Thread(target=second)
        freeing = threading.Thread(target=free)
        other.start(), freeing.start()
        time.sleep(0.3)
        events.append("first ends")
    other.join(), freeing.join()
    assert events[0] == "first ends" and ("second starts", (4, 8)) in events
    assert events.index("freed") > events.index("first ends")
