"""`wonderland.generate` and `wonderland.cancel`: run the backend on the picture and camera move, import the result.

generate = validate → job folder (image.png, cameras.json) → `python -m backend generate` child (job.py) →
progress on scene.wonderland → on success, import scene.ply as a point cloud in the "Wonderland"
collection and the previews as an image, as ONE undo step. A failed or cancelled job adds nothing to the
.blend; its folder (events.jsonl, stderr.log) stays for the user. In the UI the job runs under a modal
timer; in background mode (render farms, scripts, the bpy module) the same operator runs it to the end
synchronously and prints progress lines.
"""
from __future__ import annotations

import os
import shlex
import shutil
import struct
import tempfile
import time
import zlib
from pathlib import Path

import bpy
import numpy as np
from bpy.props import FloatProperty, StringProperty

from .display import solid_view_note
from .housekeeping import RESULT_KEY, clean_job_folders, note_job_folder, retire_previous_results, used_paths
from .job import Job, JobState, build_command, stage_progress
from .model_info import job_camera_height, job_scene_scale, job_subject_distance, job_warnings, move_length
from .plyio import PlyError, read_ply
from .pointcloud import create_object
from .preferences import (SOURCE_ROOT, WonderlandPreferences, get_preferences, output_root,
                          resolve_backend_python)
from .previews import load_previews
from .properties import effective_camera, effective_frame_range
from .trajectory import TrajectoryError, camera_trajectory, check_camera, write_cameras_json

TIMER_SECONDS = 0.25
UNDO_MESSAGE = "Wonderland Generate"
# Files Pillow (the backend's reader) opens as they are: these are copied byte for byte into the job folder.
PILLOW_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".tga", ".gif"}
INSTALL_HINT = "Set it in Preferences ▸ Add-ons ▸ Wonderland, or click Install backend."

_active: Job | None = None  # the one job that runs at a time


class GenerateError(Exception):
    """Input that cannot start a job; the message says what is wrong and how to fix it."""


# --- inputs -----------------------------------------------------------------------------------------

def _pref(prefs, name: str):
    """A preference value, or its declared default when the add-on's preferences are absent."""
    if prefs is not None:
        return getattr(prefs, name)
    return WonderlandPreferences.bl_rna.properties[name].default


def _check_image(settings) -> None:
    image = settings.image
    if image is not None:
        if image.source not in {'FILE', 'GENERATED'}:
            raise GenerateError(f"image '{image.name}' is a {image.source.lower()} image: pick a still image")
        if image.size[0] < 1 or image.size[1] < 1:  # loads the pixels: a missing file gives no size
            where = f" (its file {bpy.path.abspath(image.filepath)} may be missing)" if image.filepath else ""
            raise GenerateError(f"image '{image.name}' has no pixels{where}: reload it or pick another image")
        return
    if not settings.image_path:
        raise GenerateError("no input image: pick an image or an image file in the Wonderland panel")
    path = bpy.path.abspath(settings.image_path)
    if not os.path.isfile(path):
        raise GenerateError(f"the image file {path} does not exist: pick the image again")


def backend_python(context) -> str:
    python, where = resolve_backend_python(get_preferences(context))
    if python is None:
        raise GenerateError(f"Backend Python not found ({where}). {INSTALL_HINT}")
    return python


def check_inputs(context) -> tuple[object, int, int, str]:
    """(camera object, first frame, last frame, backend python), or GenerateError. Changes nothing."""
    settings = context.scene.wonderland
    _check_image(settings)
    cam_obj = effective_camera(context)
    try:
        check_camera(cam_obj)
    except TrajectoryError as e:
        raise GenerateError(str(e)) from None
    start, end = effective_frame_range(context)
    if end < start:
        raise GenerateError(f"the frame range {start}–{end} is empty: the end frame must not be before the start "
                            "frame")
    return cam_obj, start, end, backend_python(context)


def write_png(path: str | os.PathLike, rgba: np.ndarray) -> None:
    """An 8-bit RGBA PNG [H, W, 4] (top row first), written atomically; zlib only, as the add-on has no Pillow."""
    h, w, _ = rgba.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), np.ascontiguousarray(rgba, np.uint8).reshape(h, w * 4)], 1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".image.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1.0 / 2.4) - 0.055)


def image_rgba8(image) -> np.ndarray:
    """An image datablock's pixels as 8-bit straight RGBA, top row first, WITHOUT the scene's view transform.

    Byte images give their stored values (already in the image's colour space, usually sRGB). Float images
    hold premultiplied scene-linear values: un-premultiplied and encoded to sRGB, as the backend expects an
    sRGB picture. (`Image.save_render` would apply the view transform, e.g. AgX, changing the colours.)
    """
    w, h = image.size
    channels = image.channels
    buf = np.empty(w * h * channels, np.float32)
    image.pixels.foreach_get(buf)
    px = buf.reshape(h, w, channels)[::-1]  # Blender stores the bottom row first
    if channels >= 3:
        rgb = px[..., :3]
    else:
        rgb = np.repeat(px[..., :1], 3, axis=2)
    alpha = px[..., 3] if channels == 4 else (px[..., 1] if channels == 2 else np.ones((h, w), np.float32))
    if image.is_float:
        rgb = np.divide(rgb, alpha[..., None], out=rgb.copy(), where=alpha[..., None] > 0)
        if not image.colorspace_settings.is_data:
            rgb = linear_to_srgb(rgb)
    out = np.empty((h, w, 4), np.uint8)
    out[..., :3] = np.round(np.clip(rgb, 0.0, 1.0) * 255.0)
    out[..., 3] = np.round(np.clip(alpha, 0.0, 1.0) * 255.0)
    return out


def write_input_image(settings, folder: Path) -> Path:
    """Put the input picture into the job folder. A file is copied as it is (exact bytes, 16-bit kept; the
    backend says so if it cannot read it); an image datablock is too when it is an unedited file Pillow
    reads, else (packed, generated, painted, EXR/HDR) its pixels are written as image.png."""
    image = settings.image
    if image is None:
        source = Path(bpy.path.abspath(settings.image_path))
    elif image.source == 'FILE' and image.packed_file is None and not image.is_dirty and image.filepath:
        source = Path(bpy.path.abspath(image.filepath, library=image.library))
        if source.suffix.lower() not in PILLOW_SUFFIXES or not source.is_file():
            source = None
    else:
        source = None
    if source is not None:
        target = folder / f"image{source.suffix.lower()}"
        shutil.copyfile(source, target)
        return target
    target = folder / "image.png"
    write_png(target, image_rgba8(image))
    return target


def new_job_folder(root: str | os.PathLike) -> Path:
    """A fresh timestamped folder under `root` (…/20260131-142501, then -2, -3 … within the same second)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        folder = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir()
            note_job_folder(folder)
            return folder
        except FileExistsError:
            continue
    raise GenerateError(f"cannot make a new job folder in {root}: clean it up")


def start_job(context, extra_args: str = "") -> Job:
    """Validate, write the job folder and start the backend. The scene is left as it was (frames are stepped
    through for the trajectory and restored); only scene.wonderland's job state changes."""
    global _active
    if _active is not None and not _active.state.finished:
        raise GenerateError("a Wonderland job is already running: wait for it or cancel it")
    cam_obj, start, end, python = check_inputs(context)
    settings, prefs = context.scene.wonderland, get_preferences(context)
    try:
        cameras = camera_trajectory(context.scene, cam_obj, start, end)
    except TrajectoryError as e:
        raise GenerateError(str(e)) from None
    try:
        folder = new_job_folder(output_root(prefs))
    except OSError as e:
        raise GenerateError(f"cannot make a job folder: {e}. Pick another Output Folder in the preferences") \
            from None
    try:
        image = write_input_image(settings, folder)
        write_cameras_json(cameras, str(folder / "cameras.json"))
    except OSError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise GenerateError(f"cannot write the job folder {folder}: {e}. Pick another Output Folder in the "
                            "preferences") from None
    command = build_command(python, image, folder / "cameras.json", folder,
                            model=settings.model or _pref(prefs, "default_model"),
                            steps=settings.steps or _pref(prefs, "default_steps") or None,  # 0: the model's
                            seed=settings.seed or _pref(prefs, "default_seed"),
                            device=_pref(prefs, "device"), dtype=_pref(prefs, "precision"),
                            subject_distance=settings.subject_distance or None,   # 0: the model's own size
                            ground_z=settings.ground_z if settings.use_ground else None,
                            no_ground=not settings.use_ground)
    command += ["--video-preview"] * settings.video_preview + shlex.split(extra_args)
    # From a source checkout, run the checkout's backend even if the venv has another one installed.
    cwd = SOURCE_ROOT if (SOURCE_ROOT / "backend").is_dir() else None
    try:
        job = Job(command, folder, cwd=cwd).start()
    except OSError as e:
        raise GenerateError(f"cannot start the backend {python}: {e}. {INSTALL_HINT}") from None
    _active = job
    settings.is_running, settings.progress, settings.stage = True, 0.0, "starting"
    settings.step = settings.total = 0
    settings.status, settings.last_error = f"Running in {folder}", ""
    return job


def active_job() -> Job | None:
    return _active if _active is not None and not _active.state.finished else None


def show_progress(settings, state: JobState) -> None:
    settings.progress = state.progress
    settings.stage, settings.step, settings.total = state.stage or "starting", state.step, state.total


def finish_job(context, job: Job) -> tuple[str, str]:
    """Take a finished job's result into Blender: on success import the Gaussians and previews and push ONE
    undo step; otherwise add nothing. Returns (report level, message)."""
    global _active
    state, settings = job.state, context.scene.wonderland
    if _active is job:
        _active = None
    settings.is_running = False
    if state.outcome == "done":
        try:
            message = _import_result(context, job)
            warnings = settings.last_warnings.replace("\n", "; ")
            return ('WARNING', f"{message}. Backend warnings: {warnings}") if warnings else ('INFO', message)
        except (PlyError, OSError, RuntimeError) as e:
            state.outcome, state.message = "error", f"the backend finished but its result cannot be imported: {e}"
    if state.outcome == "cancelled":
        settings.status = f"Cancelled; the job folder is kept: {job.out_dir}"
        return 'WARNING', "Wonderland job cancelled"
    settings.last_error = state.message
    settings.status = f"Failed; see {job.out_dir / 'stderr.log'}"
    tail = f"\n{state.stderr_tail}" if state.stderr_tail and state.final is None else ""
    return 'ERROR', f"Wonderland failed: {state.message} (log: {job.out_dir / 'stderr.log'}){tail}"


def _import_result(context, job: Job) -> str:
    final, settings = job.state.final, context.scene.wonderland
    if not final.get("ply"):
        raise PlyError("the backend's done event names no PLY file")
    result = read_ply(final["ply"])
    length = move_length(job.out_dir / "cameras.json")
    if len(result.splats) == 0:
        raise PlyError(f"{final['ply']} holds no Gaussians")
    name = f"Wonderland {job.out_dir.name}"
    if context.view_layer.objects.active is not None and context.mode != 'OBJECT':
        bpy.ops.object.mode_set(mode='OBJECT')
    images = []  # the preview renders, and the decoded video when the job ran with --video-preview
    try:
        for key, label in (("previews", "Preview"), ("video", "Video")):
            image = load_previews(final.get(key) or [], f"{name} {label}")
            if image is not None:
                images.append(image)
        obj = create_object(context, name, result.splats)
    except Exception:
        for image in images:  # nothing of a failed import stays in the .blend
            bpy.data.images.remove(image)
        raise
    obj[RESULT_KEY] = str(job.out_dir)
    retired = retire_previous_results(context, obj)
    settings.last_warnings = "\n".join(job_warnings(job.out_dir, final.get("meta")))
    settings.last_move_length = length
    meta = final.get("meta") or job.out_dir / "meta.json"
    settings.last_scene_scale = job_scene_scale(meta)
    settings.last_subject_distance = job_subject_distance(meta)
    settings.last_camera_height = job_camera_height(meta)
    settings.last_result_path = str(final["ply"])
    settings.last_count = len(result.splats)
    settings.last_seconds = job.seconds
    settings.last_error = ""
    settings.progress = 1.0
    settings.status = f"Done: {len(result.splats):,} Gaussians in {job.seconds:.1f} s"
    bpy.ops.ed.undo_push(message=UNDO_MESSAGE)
    clean_job_folders(job.out_dir.parent, used_paths())
    hidden = f"; earlier results hidden: {', '.join(retired)}" if retired else ""
    return (f"Wonderland: {len(result.splats):,} Gaussians in '{obj.name}' ({job.seconds:.1f} s){hidden}"
            f"{solid_view_note()}")


def _redraw_sidebars(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == 'VIEW_3D':
                for region in area.regions:
                    if region.type == 'UI':
                        region.tag_redraw()


def _progress_line(event: dict) -> str:
    stage, step, total = event.get("stage", ""), event.get("step", 0), event.get("total", 0)
    progress = stage_progress(stage, step, total)
    return f"Wonderland: {stage} {step}/{total}" + (f" ({progress * 100:.0f}%)" if progress is not None else "")


class WONDERLAND_OT_generate(bpy.types.Operator):
    """Make 3D Gaussians from the picture and the camera's move over the frame range (runs the backend)"""
    bl_idname = "wonderland.generate"
    bl_label = "Generate Scene from Image"
    # No 'UNDO': the operator pushes its one undo step itself, after the import, and only on success
    # (and a redo panel would re-run a minutes-long job).
    bl_options = {'REGISTER'}

    extra_args: StringProperty(name="Extra Backend Arguments", options={'HIDDEN', 'SKIP_SAVE'},
                               description="More `python -m backend generate` options, e.g. '--previews 4'")
    timeout: FloatProperty(name="Timeout (s)", default=0.0, min=0.0, options={'HIDDEN', 'SKIP_SAVE'},
                           description="Background mode and scripts: stop the backend and fail after this many "
                                       "seconds (0: wait as long as it takes)")

    _timer = None
    _job: Job | None = None

    @classmethod
    def poll(cls, context):
        if active_job() is not None:
            cls.poll_message_set("A Wonderland job is running")
            return False
        return True

    def _start(self, context) -> bool:
        try:
            self._job = start_job(context, self.extra_args)
        except GenerateError as e:
            context.scene.wonderland.last_error = str(e)
            self.report({'ERROR'}, str(e))
            return False
        return True

    def _report_end(self, context) -> set[str]:
        level, message = finish_job(context, self._job)
        self.report({level}, message)
        return {'FINISHED'} if self._job.state.outcome == "done" else {'CANCELLED'}

    def execute(self, context):
        """Synchronous: background mode, and scripts calling the operator directly."""
        if not self._start(context):
            return {'CANCELLED'}
        settings, printed = context.scene.wonderland, [0]
        print(f"Wonderland: job folder {self._job.out_dir}", flush=True)

        def on_update(state: JobState) -> None:
            show_progress(settings, state)
            for event in state.events[printed[0]:]:  # every stage event, also those read in one poll
                if event.get("event") == "stage":
                    print(_progress_line(event), flush=True)
            printed[0] = len(state.events)

        try:
            self._job.wait(on_update=on_update, timeout=self.timeout or None)
        except KeyboardInterrupt:
            self._job.abort()
        return self._report_end(context)

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        if not self._start(context):
            return {'CANCELLED'}
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_SECONDS, window=context.window)
        wm.modal_handler_add(self)
        _redraw_sidebars(context)
        return {'RUNNING_MODAL'}

    def modal(self, context, event):
        if event.type == 'ESC' and event.value == 'PRESS':
            self._job.cancel()
            context.scene.wonderland.status = "Cancelling…"
            return {'RUNNING_MODAL'}
        if event.type != 'TIMER':
            return {'PASS_THROUGH'}
        state = self._job.poll()
        show_progress(context.scene.wonderland, state)
        _redraw_sidebars(context)
        if not state.finished:
            return {'PASS_THROUGH'}
        context.window_manager.event_timer_remove(self._timer)
        result = self._report_end(context)
        _redraw_sidebars(context)
        return result

    def cancel(self, context):
        """The modal handler is torn down (a file load, Blender quitting): end the child, add nothing."""
        global _active
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
        if self._job is not None:
            self._job.abort()
            if _active is self._job:
                _active = None
        try:
            context.scene.wonderland.is_running = False
        except (AttributeError, ReferenceError):
            pass  # the scene is gone with the file that was closed


class WONDERLAND_OT_cancel(bpy.types.Operator):
    """Stop the running Wonderland job (nothing is added to the scene; the job folder is kept)"""
    bl_idname = "wonderland.cancel"
    bl_label = "Cancel"
    bl_options = {'INTERNAL'}

    @classmethod
    def poll(cls, context):
        if active_job() is None:
            cls.poll_message_set("No Wonderland job is running")
            return False
        return True

    def execute(self, context):
        active_job().cancel()
        context.scene.wonderland.status = "Cancelling…"
        return {'FINISHED'}


_CLASSES = (WONDERLAND_OT_generate, WONDERLAND_OT_cancel)


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    global _active
    if _active is not None:
        _active.abort()
        _active = None
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
