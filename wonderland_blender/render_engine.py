"""The "Wonderland Gaussians" render engine: F12 and Render Animation through the backend's splat renderer.

Per frame: gather every Gaussian point cloud the render depsgraph sees, instances included (world
transform applied) into a temporary PLY, write the scene camera as cameras.json (cameras.md), ask the
backend's render worker for rgb/alpha/depth of the Render Region (the whole frame without one), and fill
Combined (scene-linear, premultiplied alpha) and Depth. Only Gaussians render here: meshes join them by
depth compositing (mixing.py). Blender makes a new engine per frame, so the worker lives at module level
and survives across frames; it is started lazily, restarted if it died, closed after WORKER_IDLE_SECONDS
without a frame (its memory freed) and ended on unregister and at exit.
"""
from __future__ import annotations

import atexit
import collections
import hashlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import bpy
import numpy as np

from .intrinsics import border_region, intrinsics_matrix, opencv_c2w, region_intrinsics, render_size
from .plyio import Splats, write_ply
from .pointcloud import is_gaussian_object, read_splats, srgb_to_linear, transform_splats
from .preferences import SOURCE_ROOT, get_preferences, resolve_backend_python
from .trajectory import write_cameras_json

ENGINE_ID = "WONDERLAND_GAUSSIANS"
EMPTY_DEPTH = 1e10  # what Blender's engines write where nothing is seen
POLL_SECONDS = 0.1
WORKER_START_SECONDS = 300.0  # first start imports torch (and may compile gsplat kernels)
_STDERR_LINES = 40
WORKER_IDLE_SECONDS = 120.0  # a worker without a frame for this long is closed (Render Animation keeps it busy)
IDLE_CHECK_SECONDS = 15.0


class RenderError(RuntimeError):
    """A frame could not be rendered; the message says why and what to do."""


class _Worker:
    """One `python -m backend render-worker` child and the threads that drain its pipes."""

    def __init__(self, python: str):
        cwd = SOURCE_ROOT if (SOURCE_ROOT / "backend").is_dir() else None
        self.proc = subprocess.Popen([python, "-m", "backend", "render-worker"], cwd=cwd,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, encoding="utf-8", bufsize=1)
        self.responses: queue.Queue = queue.Queue()
        self.stderr = collections.deque(maxlen=_STDERR_LINES)
        self.next_id = 1
        self.ready = False
        self.last_used = time.monotonic()
        self.busy = False  # handed to a render or waiting for an answer: never idle then
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours: stray output
            if isinstance(message, dict):
                self.responses.put(message)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _died(self) -> RenderError:
        tail = "\n".join(list(self.stderr)[-8:])
        return RenderError(f"the backend render worker exited (code {self.proc.returncode}): {tail or 'no output'}")

    def request(self, payload: dict, should_stop) -> dict | None:
        """Send one request and wait for its answer; None when `should_stop()` turned true first.

        An answer to an abandoned request (a cancelled frame) arrives later and is skipped by its id.
        """
        request_id = self.next_id
        self.next_id += 1
        try:
            return self._answer(request_id, payload, should_stop)
        finally:
            self.busy, self.last_used = False, time.monotonic()

    def _answer(self, request_id: int, payload: dict, should_stop) -> dict | None:
        try:
            self.proc.stdin.write(json.dumps({"id": request_id, **payload}) + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):  # ValueError: stdin was closed, the worker is ending
            self.proc.wait()
            raise self._died() from None
        waited = 0.0
        while True:
            if should_stop():
                return None
            try:
                message = self.responses.get(timeout=POLL_SECONDS)
            except queue.Empty:
                waited += POLL_SECONDS
                if not self.alive():
                    raise self._died()
                if not self.ready and waited > WORKER_START_SECONDS:
                    raise RenderError(f"the backend render worker did not start within "
                                      f"{WORKER_START_SECONDS:.0f} s")
                continue
            if message.get("event") == "ready":
                self.ready = True
            elif message.get("id") == request_id:
                return message

    def close(self) -> None:
        """End the worker: closing stdin makes it exit; terminate it if it does not."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_worker: _Worker | None = None
_worker_lock = threading.Lock()  # render threads take the worker while the main thread's idle timer may close it
_scratch: str | None = None


def _get_worker() -> _Worker:
    """The worker (a new one when there is none or it died), marked busy so the idle timer leaves it alone
    until its request() is answered: send it one."""
    global _worker
    with _worker_lock:
        if _worker is None or not _worker.alive():
            if _worker is not None:
                _worker.close()
            python, where = resolve_backend_python(get_preferences())
            if python is None:
                raise RenderError(where)
            _worker = _Worker(python)
        _worker.busy = True
        return _worker


def _scratch_dir() -> Path:
    global _scratch
    if _scratch is None or not os.path.isdir(_scratch):
        _scratch = tempfile.mkdtemp(prefix="wonderland-render-")
    return Path(_scratch)


def shutdown() -> None:
    """End the worker and remove the scratch files (unregister, Blender exit)."""
    global _worker, _scratch
    with _worker_lock:
        worker, _worker = _worker, None
    if worker is not None:
        worker.close()
    if _scratch is not None:
        shutil.rmtree(_scratch, ignore_errors=True)
        _scratch = None


def close_idle_worker(max_idle: float = WORKER_IDLE_SECONDS) -> bool:
    """Close the worker when it has had no request for `max_idle` seconds (frees its memory: the next F12
    starts a new one). True when it was closed."""
    global _worker
    with _worker_lock:
        if _worker is None or _worker.busy or time.monotonic() - _worker.last_used < max_idle:
            return False
        worker, _worker = _worker, None  # detached first: closing takes a while and no render may take it
    worker.close()
    return True


def _idle_timer() -> float:
    """bpy.app.timers callback on the main thread (registered once, as renders run on another thread)."""
    close_idle_worker()
    return IDLE_CHECK_SECONDS


def gather_splats(depsgraph) -> Splats | None:
    """All Gaussians the depsgraph renders, in world space; None when there are none.

    Read from `depsgraph.object_instances`, so collection instances, linked duplicates and objects
    instanced by geometry nodes or particles count, each at its instance's matrix. Instances made by a
    Gaussian cloud itself (its display geometry) are skipped: the cloud's own points are what render.
    """
    parts = []
    for instance in depsgraph.object_instances:
        if instance.is_instance and is_gaussian_object(instance.parent):
            continue
        obj = instance.object
        if not is_gaussian_object(obj) or (not instance.is_instance and not instance.show_self):
            continue
        splats = read_splats(obj)  # at obj.matrix_world; an instance sits at its own matrix
        relative = np.array(instance.matrix_world, np.float64) @ np.linalg.inv(np.array(obj.matrix_world))
        if not np.allclose(relative, np.eye(4), atol=1e-7):
            splats = transform_splats(splats, relative)
        if len(splats):
            parts.append(splats)
    return Splats.concatenate(parts) if parts else None


def _scene_ply(splats: Splats) -> Path:
    """A PLY of `splats` named by its content, written only when new, so an animation with static
    Gaussians writes (and the worker loads) it once. Older scene PLYs are removed."""
    digest = hashlib.blake2b(digest_size=16)
    for name in ("means", "f_dc", "f_rest", "opacity_logits", "log_scales", "quats"):
        array = np.ascontiguousarray(getattr(splats, name))
        digest.update(str(array.shape).encode())
        digest.update(array.data)
    path = _scratch_dir() / f"scene-{digest.hexdigest()}.ply"
    if not path.exists():
        for old in path.parent.glob("scene-*.ply"):
            old.unlink()
        write_ply(path, splats)
    return path


def camera_dict(depsgraph, width: int, height: int, region: tuple[int, int, int, int] | None = None) -> dict:
    """cameras.json of the scene camera at the depsgraph's frame (one frame), for the `region`
    (x0, y0 from the top, w, h) of the width × height frame: the whole frame when None."""
    scene = depsgraph.scene
    if scene.camera is None:
        raise RenderError("the scene has no camera: add one and set it as the scene camera")
    cam_obj = scene.camera.evaluated_get(depsgraph)
    cam = cam_obj.data
    if cam.type != 'PERSP':
        raise RenderError(f"camera '{cam_obj.name}' is {cam.type.lower()}; the Gaussian renderer needs a "
                          "perspective camera: set its Type to Perspective")
    render = scene.render
    try:
        K = intrinsics_matrix(lens=cam.lens, sensor_width=cam.sensor_width, sensor_height=cam.sensor_height,
                              sensor_fit=cam.sensor_fit, width=width, height=height,
                              pixel_aspect_x=render.pixel_aspect_x, pixel_aspect_y=render.pixel_aspect_y,
                              shift_x=cam.shift_x, shift_y=cam.shift_y)
        c2w = opencv_c2w(cam_obj.matrix_world)
    except ValueError as e:
        raise RenderError(f"camera '{cam_obj.name}': {e}") from None
    x0, y0, width, height = region or (0, 0, width, height)
    K = region_intrinsics(K, x0, y0)
    return {"width": width, "height": height,
            "frames": [{"frame": scene.frame_current, "K": K.tolist(), "c2w": c2w.tolist()}]}


def render_threads(render) -> int:
    """The CPU threads Blender's render settings allow: the fixed count, else every CPU."""
    return render.threads if render.threads_mode == 'FIXED' else (os.cpu_count() or 1)


def render_arrays(depsgraph, width: int, height: int, should_stop=lambda: False,
                  region: tuple[int, int, int, int] | None = None):
    """(rgba [h, w, 4] scene-linear premultiplied, depth [h, w]) top row first, of the `region`
    (x0, y0 from the top, w, h) of the width × height frame (all of it when None); None if stopped."""
    region_w, region_h = (region[2], region[3]) if region else (width, height)
    splats = gather_splats(depsgraph)
    if splats is None:
        return (np.zeros((region_h, region_w, 4), np.float32),
                np.full((region_h, region_w), EMPTY_DEPTH, np.float32))
    scratch = _scratch_dir()
    ply = _scene_ply(splats)
    cameras = scratch / "cameras.json"
    write_cameras_json(camera_dict(depsgraph, width, height, region), str(cameras))
    out = scratch / "frame"
    response = _get_worker().request({"ply": str(ply), "cameras": str(cameras), "width": region_w,
                                      "height": region_h, "out": str(out),
                                      "threads": render_threads(depsgraph.scene.render)}, should_stop)
    if response is None:
        return None
    if not response.get("ok"):
        raise RenderError(f"the backend could not render: {response.get('error', 'no reason given')}")
    rgb = np.load(response["rgb"])
    alpha = np.load(response["alpha"])
    depth = np.load(response["depth"])
    return to_scene_linear(rgb, alpha), np.where(alpha > 0, depth, EMPTY_DEPTH).astype(np.float32)


def world_background(world) -> tuple[np.ndarray, str]:
    """(linear RGB, where it came from): the colour put behind the Gaussians when Film ▸ Transparent is off.

    A World whose output is fed by a Background node with a plain colour gives colour × strength; any
    other setup (a texture, a sky) cannot be evaluated here, and the World's Viewport Display colour is
    used instead, which the second string says so that the engine can tell the user.
    """
    tree = world.node_tree
    output = next((n for n in tree.nodes if n.bl_idname == 'ShaderNodeOutputWorld' and n.is_active_output),
                  None) if tree is not None else None
    links = output.inputs["Surface"].links if output is not None else ()
    node = links[0].from_node if links else None
    if node is not None and node.bl_idname == 'ShaderNodeBackground' and \
            not node.inputs["Color"].is_linked and not node.inputs["Strength"].is_linked:
        rgb = np.asarray(node.inputs["Color"].default_value[:3], np.float32) * node.inputs["Strength"].default_value
        return rgb, ""
    return np.asarray(world.color, np.float32), (
        f"World '{world.name}' is not a plain Background colour: the Wonderland engine used its Viewport "
        "Display colour behind the Gaussians (or turn on Film ▸ Transparent and composite a background)")


def to_scene_linear(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Display colour over black (premultiplied) → scene-linear premultiplied RGBA."""
    a = alpha[..., None]
    straight = np.divide(rgb, a, out=np.zeros_like(rgb), where=a > 1e-6)
    rgba = np.empty(rgb.shape[:2] + (4,), np.float32)
    rgba[..., :3] = srgb_to_linear(np.maximum(straight, 0.0)) * a
    rgba[..., 3] = alpha
    return rgba


class WonderlandRenderEngine(bpy.types.RenderEngine):
    bl_idname = ENGINE_ID
    bl_label = "Wonderland Gaussians"
    bl_use_preview = False
    bl_use_postprocess = True
    bl_use_eevee_viewport = True  # material preview keeps working while this engine is chosen

    def update_render_passes(self, scene=None, renderlayer=None):
        self.register_pass(scene, renderlayer, "Combined", 4, "RGBA", 'COLOR')
        if renderlayer.use_pass_z:
            self.register_pass(scene, renderlayer, "Depth", 1, "Z", 'VALUE')

    def render(self, depsgraph):
        try:
            self._render(depsgraph)
        except Exception as e:  # noqa: BLE001 - any failure must be a visible error, never an empty frame
            message = str(e) if isinstance(e, (RenderError, ValueError, OSError)) else f"{type(e).__name__}: {e}"
            self.report({'ERROR'}, f"Wonderland: {message}")
            self.error_set(message)

    def _render(self, depsgraph):
        scene = depsgraph.scene
        render = scene.render
        width, height = render_size(render.resolution_x, render.resolution_y, render.resolution_percentage)
        border = (render.border_min_x, render.border_min_y, render.border_max_x, render.border_max_y)
        region = border_region(width, height, border if render.use_border and border != (0, 0, 1, 1) else None)
        self.update_stats("", "Wonderland: rendering Gaussians")
        arrays = render_arrays(depsgraph, width, height, self.test_break, region)
        if arrays is None:
            return  # cancelled
        rgba, depth = arrays
        if not render.film_transparent and scene.world is not None:
            background, note = world_background(scene.world)
            if note:
                self.report({'WARNING'}, note)
            rgba[..., :3] += (1.0 - rgba[..., 3:]) * background
            rgba[..., 3] = 1.0
        h, w = depth.shape
        result = self.begin_result(0, 0, w, h, layer=depsgraph.view_layer.name)
        try:
            if (result.resolution_x, result.resolution_y) != (w, h):
                raise RenderError(f"Blender expects a {result.resolution_x}×{result.resolution_y} image for the "
                                  f"Render Region but the engine computed {w}×{h}: turn Render Region off and "
                                  "report this")
            layer = result.layers[0]
            layer.passes["Combined"].rect = rgba[::-1].reshape(-1, 4)  # Blender's rows go bottom-up
            depth_pass = layer.passes.find_by_name("Depth", "")
            if depth_pass is not None:
                depth_pass.rect = depth[::-1].reshape(-1, 1)
        except BaseException:
            self.end_result(result, cancel=True)
            raise
        self.end_result(result)


class WONDERLAND_PT_passes(bpy.types.Panel):
    """The passes this engine writes besides Combined."""
    bl_label = "Passes"
    bl_space_type = 'PROPERTIES'
    bl_region_type = 'WINDOW'
    bl_context = "view_layer"
    COMPAT_ENGINES = {ENGINE_ID}

    @classmethod
    def poll(cls, context):
        return context.engine in cls.COMPAT_ENGINES

    def draw(self, context):
        self.layout.prop(context.view_layer, "use_pass_z", text="Depth")


_SKIPPED_PANELS = ("EEVEE", "eevee", "light", "spot", "cone", "aov", "cryptomatte", "lightgroups")


def _compatible_panels():
    """Built-in panels for settings this engine uses: output format and frames, colour management,
    camera and object data. Lights, probes and EEVEE/Cycles passes do nothing here and stay hidden."""
    prefixes = ("RENDER_PT_format", "RENDER_PT_frame", "RENDER_PT_output", "RENDER_PT_color_management",
                "RENDER_PT_encoding", "RENDER_PT_post_processing", "RENDER_PT_stamp", "RENDER_PT_time_stretching",
                "DATA_PT_", "VIEWLAYER_PT_layer")
    for panel in bpy.types.Panel.__subclasses__():
        engines = getattr(panel, "COMPAT_ENGINES", None)
        name = panel.__name__
        if isinstance(engines, set) and name.startswith(prefixes) and \
                not any(word in name for word in _SKIPPED_PANELS) and \
                engines & {"BLENDER_RENDER", "BLENDER_EEVEE", "BLENDER_EEVEE_NEXT", "CYCLES"}:
            yield panel


def register():
    bpy.utils.register_class(WonderlandRenderEngine)
    bpy.utils.register_class(WONDERLAND_PT_passes)
    for panel in _compatible_panels():
        panel.COMPAT_ENGINES.add(ENGINE_ID)
    atexit.register(shutdown)
    bpy.app.timers.register(_idle_timer, first_interval=IDLE_CHECK_SECONDS, persistent=True)


def unregister():
    if bpy.app.timers.is_registered(_idle_timer):
        bpy.app.timers.unregister(_idle_timer)
    atexit.unregister(shutdown)
    shutdown()
    for panel in _compatible_panels():
        panel.COMPAT_ENGINES.discard(ENGINE_ID)
    bpy.utils.unregister_class(WONDERLAND_PT_passes)
    bpy.utils.unregister_class(WonderlandRenderEngine)
