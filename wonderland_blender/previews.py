"""A job's preview renders (preview/0000.png …) as one Blender image sequence, and an operator to show it.

One image datablock per job (source SEQUENCE) rather than one per frame, so a 49-frame preview adds one
entry to the image list. The frame count is kept on the image (`PREVIEW_COUNT_KEY`) because Blender only
knows a sequence's length through an image user. Blender packs only the first file of a sequence, so
the previews are kept beside the .blend instead: on every save their files are copied into
"<blend name>_wonderland/<image name>/" next to it (unless they lie in the .blend's folder already) and
the image points there by a relative path, so the .blend no longer needs its job folders (housekeeping.py
may remove them) and can move with that folder.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import bpy

from .atomic_write import atomic_file

PREVIEW_COUNT_KEY = "wonderland_preview_count"
SOURCE_KEY = "wonderland_source"  # the folder the files were loaded from (they may be copied away since)
BESIDE_SUFFIX = "_wonderland"


def load_previews(paths: list[str | os.PathLike], name: str) -> bpy.types.Image | None:
    """Load the preview PNGs (numbered 0000.png, 0001.png … in one folder) as one image; None when there are none."""
    paths = [Path(p) for p in paths]
    if not paths:
        return None
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"preview images are missing: {', '.join(missing[:3])}")
    image = bpy.data.images.load(str(paths[0]), check_existing=False)
    image.name = name
    if len(paths) > 1:
        image.source = 'SEQUENCE'
    image[PREVIEW_COUNT_KEY] = len(paths)
    image[SOURCE_KEY] = str(paths[0].parent.resolve())
    image.use_fake_user = True  # nothing else uses it yet: without this, saving the .blend would drop it
    return image


def preview_count(image) -> int:
    return int(image.get(PREVIEW_COUNT_KEY, 1))


def beside_folder(blend_path: str | os.PathLike) -> Path:
    """Where the previews of the .blend at `blend_path` are kept."""
    blend_path = Path(blend_path)
    return blend_path.parent / f"{blend_path.stem}{BESIDE_SUFFIX}"


def _copy_atomic(source: Path, target: Path) -> None:
    with open(source, "rb") as src, atomic_file(target) as dst:
        shutil.copyfileobj(src, dst)


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` lies in `folder` or below it (compared as the OS compares paths)."""
    path, folder = (Path(os.path.normcase(os.path.abspath(p))) for p in (path, folder))
    return path.is_relative_to(folder)


def keep_previews_beside(blend_path: str | os.PathLike) -> list[bpy.types.Image]:
    """Copy every preview sequence not yet beside the .blend at `blend_path` there and point it at the copy."""
    folder = beside_folder(blend_path)
    moved = []
    for image in bpy.data.images:
        if PREVIEW_COUNT_KEY not in image or not image.filepath or image.packed_file is not None:
            continue
        first = Path(bpy.path.abspath(image.filepath))
        if _inside(first, Path(blend_path).parent) or not first.is_file():  # travels with the .blend already
            continue
        target = folder / bpy.path.clean_name(image.name)
        digits = len(first.stem)
        try:
            target.mkdir(parents=True, exist_ok=True)
            for i in range(int(first.stem), int(first.stem) + preview_count(image)):
                name = f"{i:0{digits}d}{first.suffix}"
                if (first.parent / name).is_file():
                    _copy_atomic(first.parent / name, target / name)
        except OSError as e:  # the .blend still saves; its previews stay in the job folder, which is kept
            print(f"Wonderland: could not copy the previews of '{image.name}' beside the .blend ({e}); "
                  f"they stay in {first.parent}")
            continue
        # relative to the folder the .blend is saved in now: Save As (relative_remap) rebases relative paths
        # from there to the new folder after this handler; a never-saved .blend has no paths to rebase
        start = os.path.dirname(bpy.data.filepath) if bpy.data.filepath else str(Path(blend_path).parent)
        image.filepath = bpy.path.relpath(str(target / first.name), start=start)
        moved.append(image)
    return moved


@bpy.app.handlers.persistent
def _on_save_pre(blend_path, *_args) -> None:
    if isinstance(blend_path, str) and blend_path:
        keep_previews_beside(blend_path)


def find_preview(job_dir: str | os.PathLike) -> bpy.types.Image | None:
    """The preview image loaded from `job_dir`/preview, if it is still in the .blend."""
    folder = os.path.normcase(os.path.abspath(os.path.join(job_dir, "preview")))
    for image in bpy.data.images:
        source = image.get(SOURCE_KEY) or os.path.dirname(bpy.path.abspath(image.filepath))
        if PREVIEW_COUNT_KEY in image and os.path.normcase(os.path.abspath(source)) == folder:
            return image
    return None


def show_in_image_editor(space, image) -> None:
    """Show `image` in an Image Editor space, its frames mapped to frames 1…N (file 0000.png at frame 1)."""
    space.image = image
    user = space.image_user
    user.frame_start = 1
    user.frame_offset = -1
    user.frame_duration = preview_count(image)
    user.use_cyclic = True
    user.use_auto_refresh = True


class WONDERLAND_OT_open_preview(bpy.types.Operator):
    """Show the last result's preview renders in an Image Editor (a new window when none is open)"""
    bl_idname = "wonderland.open_preview"
    bl_label = "Open Preview"

    @classmethod
    def poll(cls, context):
        if bpy.app.background:
            cls.poll_message_set("No windows in background mode")
            return False
        settings = context.scene.wonderland
        if not settings.last_result_path or find_preview(os.path.dirname(settings.last_result_path)) is None:
            cls.poll_message_set("No preview: generate a scene first")
            return False
        return True

    def execute(self, context):
        image = find_preview(os.path.dirname(context.scene.wonderland.last_result_path))
        for window in context.window_manager.windows:
            for area in window.screen.areas:
                if area.type == 'IMAGE_EDITOR':
                    show_in_image_editor(area.spaces.active, image)
                    area.tag_redraw()
                    return {'FINISHED'}
        bpy.ops.wm.window_new()
        window = context.window_manager.windows[-1]
        area = max(window.screen.areas, key=lambda a: a.width * a.height)
        area.type = 'IMAGE_EDITOR'
        show_in_image_editor(area.spaces.active, image)
        return {'FINISHED'}


def register():
    bpy.utils.register_class(WONDERLAND_OT_open_preview)
    bpy.app.handlers.save_pre.append(_on_save_pre)


def unregister():
    if _on_save_pre in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.remove(_on_save_pre)
    bpy.utils.unregister_class(WONDERLAND_OT_open_preview)
