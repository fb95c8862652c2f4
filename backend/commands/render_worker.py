"""`render-worker`: a long-lived renderer for Blender's "Wonderland Gaussians" render engine.

Blender makes a new render engine per frame; starting Python, torch and the renderer for every frame
would cost seconds, so the add-on keeps one worker alive and sends it requests. Protocol: JSON lines.

request (stdin):   {"id": 7, "ply": "/tmp/scene.ply", "cameras": "/tmp/cameras.json",
                    "width": 1920, "height": 1080, "out": "/tmp/frame-0007", "threads": 8}
                   ("threads" optional: CPU threads for this and later frames, 0 = one per core)
response (stdout): {"id": 7, "ok": true, "rgb": ".../rgb.npy", "alpha": ".../alpha.npy",
                    "depth": ".../depth.npy", "count": N, "seconds": 0.42, "rss_mb": 512.0}
               or  {"id": 7, "ok": false, "error": "what went wrong and how to fix it"}

Outputs are float32 .npy files, top row first, written atomically: rgb [H, W, 3] display colour over
black (premultiplied by alpha), alpha [H, W], depth [H, W] (camera z, 0 where nothing is seen), for the
first camera of cameras.json. The loaded PLY is cached by path, size and mtime; a new scene replaces it,
and after --idle-free seconds without a request it is freed and memory handed back to the OS, announced by
{"event": "freed", "rss_mb": ...} (lines without an "id" are not answers). The worker exits when its stdin
closes (the parent ended), so it never outlives Blender. On the CPU it renders with the compiled
rasterizer (backend.render.compiled), whose kernels it loads right after saying "ready".
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np

from backend.devices import DEVICES


def _seconds(text: str) -> float:
    """A positive number of seconds (0 would make the idle wait a busy loop)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive, finite number of seconds: pass e.g. 60")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--idle-free", type=_seconds, default=60.0, metavar="SECONDS",
                   help="free the cached scene after this many idle seconds (default 60)")


def _save_npy(path: Path, array: np.ndarray) -> None:
    from backend.atomic import atomic_path
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array, np.float32))


class _Renderer:
    def __init__(self, device):
        self.device = device
        self._cache_key = None
        self._gaussians = None

    def gaussians(self, ply: str):
        from backend.ply import read_ply
        st = os.stat(ply)
        key = (os.path.abspath(ply), st.st_size, st.st_mtime_ns)
        if key != self._cache_key:
            self.free()  # the old scene goes before the new one loads
            gaussians, _ = read_ply(ply)
            self._gaussians, self._cache_key = gaussians.to(self.device), key
        return self._gaussians

    def free(self) -> bool:
        """Drop the cached scene and hand freed memory back to the OS; False when nothing was cached."""
        if self._gaussians is None:
            return False
        self._gaussians, self._cache_key = None, None
        from backend.render.compiled import free_buffers
        free_buffers()  # the compiled rasterizer's work arrays, kept between frames
        gc.collect()
        if sys.platform.startswith("linux"):
            try:  # glibc keeps freed heap pages; malloc_trim returns them
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except (OSError, AttributeError):
                pass
        return True

    def handle(self, request: dict) -> dict:
        import torch
        from backend.cameras import load_cameras
        from backend.render import render, set_threads

        start = time.perf_counter()
        for key in ("ply", "cameras", "width", "height", "out"):
            if key not in request:
                return {"ok": False, "error": f"request lacks '{key}'"}
        if request.get("threads") is not None:
            set_threads(request["threads"])
        cameras = load_cameras(request["cameras"])[0].to(self.device)
        gaussians = self.gaussians(request["ply"])
        with torch.no_grad():
            result = render(gaussians, cameras, int(request["width"]), int(request["height"]))
        out = Path(request["out"])
        paths = {name: out / f"{name}.npy" for name in ("rgb", "alpha", "depth")}
        _save_npy(paths["rgb"], result.rgb[0].float().cpu().numpy())
        _save_npy(paths["alpha"], result.alpha[0, ..., 0].float().cpu().numpy())
        _save_npy(paths["depth"], result.depth[0, ..., 0].float().cpu().numpy())
        return {"ok": True, **{k: str(v) for k, v in paths.items()}, "count": len(gaussians),
                "seconds": round(time.perf_counter() - start, 4), "rss_mb": round(_rss_mb(), 1)}


def run(args) -> int:
    from backend.devices import pick_device
    from backend.errors import InputError

    # The protocol owns the real stdout; anything else printed (libraries, warnings) goes to stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    renderer = _Renderer(pick_device(args.device))
    print(json.dumps({"event": "ready", "device": str(renderer.device)}), file=protocol)
    if renderer.device.type == "cpu":
        from backend.render import compiled
        if not compiled.unavailable_reason():
            compiled.warm()  # loads the cached kernels while the first request is on its way
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(lines,), daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=args.idle_free)
        except queue.Empty:
            if renderer.free():
                print(json.dumps({"event": "freed", "rss_mb": round(_rss_mb(), 1)}), file=protocol)
            continue
        if line is None:
            break
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request must be a JSON object")
        except ValueError as e:
            print(json.dumps({"id": None, "ok": False, "error": f"bad request line: {e}"}), file=protocol)
            continue
        try:
            response = renderer.handle(request)
        except InputError as e:
            response = {"ok": False, "error": str(e)}
        except FileNotFoundError as e:
            response = {"ok": False, "error": f"{e.filename} does not exist"}
        except Exception as e:  # noqa: BLE001 - one bad request must not end the worker
            response = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps({"id": request.get("id"), **response}), file=protocol)
    return 0


def _read_lines(lines: queue.Queue) -> None:
    """stdin's lines into `lines`, then None when it closes: the main loop waits with a timeout."""
    for line in sys.stdin:
        lines.put(line)
    lines.put(None)


def _rss_mb() -> float:
    """Current resident memory in MB (psutil comes with accelerate; the `resource` module is Unix-only)."""
    import psutil
    return psutil.Process().memory_info().rss / 2**20
