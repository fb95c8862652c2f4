"""tools/demo.py end to end: the real bpy module drives the add-on and the real backend (`--model tiny`) in a
child process; its .blend, PLY, previews and contact sheet are then checked here."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tools" / "demo.py"
PREVIEWS = 2


def load_demo():
    spec = importlib.util.spec_from_file_location("wonderland_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One demo run on the rocket picture (orbit move), small: 1 step, 2 previews. Returns (out dir, stdout)."""
    out = tmp_path_factory.mktemp("demo_out")
    cmd = [sys.executable, str(DEMO), "--model", "tiny", "--steps", "1", "--previews", str(PREVIEWS),
           "--out", str(out), "--only", "rocket"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return out, result.stdout


def test_demo_writes_every_output_and_says_the_weights_are_random(demo_run):
    out, stdout = demo_run
    folder = out / "rocket"
    assert sorted(p.name for p in folder.iterdir()) == ["contact_sheet.png", "meta.json", "preview", "scene.blend",
                                                         "scene.ply"]
    assert sorted(p.name for p in (folder / "preview").iterdir()) == ["0000.png", "0001.png"]
    assert [p.name for p in out.iterdir()] == ["rocket"]  # no staging or job folders left behind
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["random_weights"] is True and meta["steps"] == 1 and meta["image_size"] == [480, 320]
    assert "RANDOM weights" in stdout and "NOISE" in stdout
    count = PlyData.read(str(folder / "scene.ply"))["vertex"].count
    assert count == meta["count"] > 0
    assert f"rocket: {count:,} Gaussians" in stdout
    assert str(folder / "contact_sheet.png") in stdout


def test_demo_blend_holds_the_camera_move_and_the_point_cloud(demo_run, addon):
    out, _ = demo_run
    folder = out / "rocket"
    bpy.ops.wm.open_mainfile(filepath=str(folder / "scene.blend"))
    scene = bpy.context.scene
    assert (scene.render.resolution_x, scene.render.resolution_y) == (480, 320)
    assert (scene.frame_start, scene.frame_end) == (1, 9)
    cam = scene.camera
    assert cam is not None and cam.type == 'CAMERA' and cam.animation_data.action is not None
    scene.frame_set(1)
    first = np.array(cam.matrix_world)
    scene.frame_set(9)
    assert np.linalg.norm(np.array(cam.matrix_world)[:3, 3] - first[:3, 3]) > 0.5  # the orbit moves it
    clouds = [o for o in bpy.data.collections["Wonderland"].objects if o.type == 'POINTCLOUD']
    assert len(clouds) == 1
    assert len(clouds[0].data.points) == PlyData.read(str(folder / "scene.ply"))["vertex"].count
    previews = [im for im in bpy.data.images if im.filepath.startswith("//preview/")]
    assert len(previews) == 1 and Path(bpy.path.abspath(previews[0].filepath)) == folder / "preview" / "0000.png"
    assert scene.wonderland.last_result_path == str(folder / "scene.ply")


def test_contact_sheet_is_the_picture_and_the_previews_in_a_labelled_grid(demo_run):
    out, _ = demo_run
    demo = load_demo()
    folder = out / "rocket"
    picture = Image.open(demo.INPUTS_DIR / "rocket.jpg").convert("RGB")
    cell_h = demo.cell_height(picture.size)
    size, corners = demo.sheet_geometry(1 + PREVIEWS, cell_h)
    sheet = Image.open(folder / "contact_sheet.png")
    assert sheet.format == "PNG" and sheet.size == size == (demo.PAD + 3 * (demo.CELL_W + demo.PAD),
                                                            demo.TITLE_H + demo.PAD + cell_h + demo.LABEL_H + demo.PAD)
    sheet = np.asarray(sheet.convert("RGB"), np.float32)
    sources = [picture] + [Image.open(folder / "preview" / f"{i:04d}.png").convert("RGB") for i in range(PREVIEWS)]
    for source, (x, y) in zip(sources, corners):
        want = np.asarray(source.resize((demo.CELL_W, cell_h), Image.Resampling.LANCZOS), np.float32)
        assert np.abs(sheet[y:y + cell_h, x:x + demo.CELL_W] - want).mean() < 1.0
        label = sheet[y + cell_h:y + cell_h + demo.LABEL_H, x:x + demo.CELL_W]
        assert (np.abs(label - demo.BACKGROUND).max(axis=2) > 60).sum() > 30  # text was drawn under the cell
    title = sheet[:demo.TITLE_H]
    assert (np.abs(title - demo.WARNING_TEXT).max(axis=2) < 40).sum() > 50  # the random-weights title colour
