"""What a new result does to the old ones: earlier results leave renders, old job folders are removed.

Re-generating keeps every earlier result in the .blend (it may hold the artist's edits) but hides it in the
viewport and turns off its render visibility, so only the newest renders; the Outliner brings any back.

Job folder policy (stated in the README): after each successful Generate, the job folders under the
Output Folder beyond the KEEP_JOBS newest are removed, but only those made in this Blender session and
never any the open .blend still uses (a result's source folder, a preview image's files, the last result's
PLY). Folders from earlier sessions are left alone: other saved .blend files may still need them ("Input
View as Mesh" rebuilds from a job folder's meta.json, cameras.json and scene.ply). Only folders that look
like jobs (a timestamp name holding cameras.json) are ever touched.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import bpy

RESULT_KEY = "wonderland_job"  # on a generated Gaussian object: the job folder it came from
KEEP_JOBS = 10
JOB_NAME = re.compile(r"\d{8}-\d{6}(-\d+)?")
_made_this_session: set[str] = set()  # the job folders made since Blender started: the only ones ever removed


def retire_previous_results(context, newest) -> list[str]:
    """Hide earlier generated results (viewport and render) in the scene; the names of those newly hidden."""
    retired = []
    for obj in context.scene.objects:
        if obj == newest or RESULT_KEY not in obj or obj.hide_render:
            continue
        obj.hide_render = True
        if obj.name in context.view_layer.objects:
            obj.hide_set(True)
        retired.append(obj.name)
    return retired


def _norm(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.abspath(path))


def used_paths() -> list[str]:
    """Files and folders the open .blend refers to that may sit in a job folder."""
    paths = [obj[RESULT_KEY] for obj in bpy.data.objects if RESULT_KEY in obj]
    paths += [bpy.path.abspath(image.filepath, library=image.library) for image in bpy.data.images
              if image.filepath and image.packed_file is None]
    paths += [scene.wonderland.last_result_path for scene in bpy.data.scenes
              if getattr(scene, "wonderland", None) is not None and scene.wonderland.last_result_path]
    return [_norm(p) for p in paths if p]


def note_job_folder(folder: str | os.PathLike) -> None:
    """Record a job folder made in this session, so clean_job_folders may remove it later."""
    _made_this_session.add(_norm(folder))


def job_folders(root: str | os.PathLike) -> list[Path]:
    """The job folders under `root`, newest first (their names are timestamps)."""
    try:
        entries = list(Path(root).iterdir())
    except OSError:
        return []
    jobs = [d for d in entries if d.is_dir() and JOB_NAME.fullmatch(d.name) and (d / "cameras.json").is_file()]
    return sorted(jobs, key=lambda d: (d.name[:15], int(d.name[16:] or 1)), reverse=True)


def clean_job_folders(root: str | os.PathLike, used: list[str], keep: int = KEEP_JOBS) -> list[Path]:
    """Remove the job folders beyond the `keep` newest that were made in this session and that nothing in
    `used` lies in; the removed ones."""
    removed = []
    for folder in job_folders(root)[keep:]:
        top = _norm(folder)
        if top not in _made_this_session or any(p == top or p.startswith(top + os.sep) for p in used):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            _made_this_session.discard(top)
            removed.append(folder)
    return removed
