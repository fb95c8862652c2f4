"""`wonderland.generate` / `wonderland.cancel` inside the real bpy module (background mode), with the real
backend child (`--model tiny`) or small stand-in children for the failure paths."""
from __future__ import annotations

import json
import stat
import sys
import time
from pathlib import Path

import bpy
import numpy as np
import pytest
from PIL import Image

from processes import pid_alive
from wonderland_blender import display, ops_generate, previews
from wonderland_blender.plyio import read_ply
from wonderland_blender.preferences import ENV_BACKEND_PYTHON, get_preferences

FAST_PREVIEWS = "--previews 2 --preview-size 32"  # the tiny model's CPU preview renders dominate its run time
DATA_KINDS = ("objects", "collections", "meshes", "pointclouds", "images", "materials", "cameras")


def snapshot() -> dict:
    """What the .blend holds, by kind: names of every datablock."""
    return {kind: sorted(d.name for d in getattr(bpy.data, kind)) for kind in DATA_KINDS}


@pytest.fixture
def generate_ops(addon):
    """The add-on's generate/cancel/preview operators (registered by hand until __init__ lists them)."""
    mine = [module for module, cls in ((previews, "WONDERLAND_OT_open_preview"),
                                       (ops_generate, "WONDERLAND_OT_generate")) if not hasattr(bpy.types, cls)]
    for module in mine:
        module.register()
    yield
    for module in reversed(mine):
        module.unregister()


@pytest.fixture
def job_scene(generate_ops, scene, make_camera, tmp_path, monkeypatch):
    """A small scene ready to generate: a 64×48 picture file, a camera moving over frames 1–3, the tiny
    model on the CPU, jobs under tmp_path/jobs, and the test venv's python as the backend."""
    picture = tmp_path / "picture.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(picture)
    cam = make_camera("Cam", location=(0.0, -4.0, 1.0), rotation=(1.4, 0.0, 0.0))
    cam.keyframe_insert("location", frame=1)
    cam.location.x = 0.3
    cam.keyframe_insert("location", frame=3)
    scene.frame_start, scene.frame_end = 1, 3
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 48, 100
    s = scene.wonderland
    s.image_path, s.model, s.steps, s.seed = str(picture), "tiny", 2, 1
    prefs = get_preferences()
    prefs.device, prefs.output_dir = 'cpu', str(tmp_path / "jobs")
    monkeypatch.setenv(ENV_BACKEND_PYTHON, sys.executable)
    return scene


def job_folders(tmp_path) -> list[Path]:
    jobs = tmp_path / "jobs"
    return sorted(jobs.iterdir()) if jobs.is_dir() else []


def test_generate_end_to_end_imports_gaussians_and_previews(job_scene, tmp_path, capsys):
    bpy.ops.ed.undo_push(message="before generate")
    before = snapshot()
    assert bpy.ops.wonderland.generate(extra_args=FAST_PREVIEWS) == {'FINISHED'}

    (folder,) = job_folders(tmp_path)
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    done = events[-1]
    assert done["event"] == "done"
    assert [e["stage"] for e in events if e["event"] == "stage" and e["stage"] == "denoise"]
    cameras = json.loads((folder / "cameras.json").read_text())
    assert [f["frame"] for f in cameras["frames"]] == [1, 2, 3] and cameras["width"] == 64
    assert (folder / "image.png").read_bytes() == Path(job_scene.wonderland.image_path).read_bytes()

    coll = bpy.data.collections["Wonderland"]
    (obj,) = coll.objects
    assert obj.type == 'POINTCLOUD'
    ply_count = len(read_ply(done["ply"]).splats)
    assert len(obj.data.points) == ply_count == done["count"] > 0
    (preview,) = [im for im in bpy.data.images if previews.PREVIEW_COUNT_KEY in im]
    assert previews.preview_count(preview) == len(done["previews"]) == 2
    assert preview.source == 'SEQUENCE' and Path(preview.filepath) == folder / "preview" / "0000.png"
    assert previews.find_preview(folder) == preview

    s = job_scene.wonderland
    assert (s.last_result_path, s.last_count, s.is_running, s.last_error) == (done["ply"], ply_count, False, "")
    assert s.progress == 1.0 and s.last_seconds > 0
    after = snapshot()
    assert {k: sorted(set(after[k]) - set(before[k])) for k in DATA_KINDS if after[k] != before[k]} == {
        "objects": sorted([obj.name, display.QUAD_OBJECT]), "collections": ["Wonderland"],
        "pointclouds": [obj.data.name], "meshes": [display.QUAD_OBJECT], "images": [preview.name],
        "materials": [display.SPLAT_MATERIAL]}  # the display's quad object is in no scene
    out = capsys.readouterr().out
    assert "Wonderland: denoise 1/2 (42%)" in out and "Wonderland: write 4/4 (100%)" in out  # progress lines

    # one undo step holds the whole import: one undo removes it all, one redo brings it all back
    bpy.ops.ed.undo()
    assert snapshot() == before
    bpy.ops.ed.redo()
    assert snapshot() == after


def test_a_video_preview_comes_in_as_its_own_image_sequence(job_scene, tmp_path):
    job_scene.wonderland.video_preview = True  # the panel's checkbox
    assert bpy.ops.wonderland.generate(extra_args=FAST_PREVIEWS) == {'FINISHED'}
    (folder,) = job_folders(tmp_path)
    done = json.loads((folder / "events.jsonl").read_text().splitlines()[-1])
    loaded = {Path(im.filepath).parent.relative_to(folder).as_posix(): im
              for im in bpy.data.images if previews.PREVIEW_COUNT_KEY in im}
    assert set(loaded) == {"preview", "preview/video"}
    video = loaded["preview/video"]
    assert previews.preview_count(video) == len(done["video"]) == 9  # the tiny model's frames
    assert video.source == 'SEQUENCE' and video.name.endswith(" Video") and video.size[:] == (96, 64)
    assert previews.find_preview(folder) == loaded["preview"]  # "open preview" shows the renders


def test_cancel_after_the_first_denoise_step_leaves_the_blend_and_no_process(job_scene, tmp_path):
    job_scene.wonderland.steps = 30  # so the cancel lands mid-denoise
    before = snapshot()
    job = ops_generate.start_job(bpy.context, FAST_PREVIEWS)
    assert job_scene.wonderland.is_running and not bpy.ops.wonderland.generate.poll()
    deadline = time.monotonic() + 90
    while not job.state.finished and time.monotonic() < deadline:
        state = job.poll()
        ops_generate.show_progress(job_scene.wonderland, state)
        if state.stage == "denoise" and not job.cancel_requested:
            assert bpy.ops.wonderland.cancel() == {'FINISHED'}   # the panel's Cancel button
        time.sleep(0.05)
    assert job.state.finished, "the job did not stop within 90 s"
    level, message = ops_generate.finish_job(bpy.context, job)

    assert (level, job.state.outcome, job.state.returncode) == ('WARNING', "cancelled", 3)
    assert job.state.final == {"event": "cancelled", "t": job.state.final["t"]}
    denoised = [e["step"] for e in job.state.events if e.get("stage") == "denoise"]
    assert denoised and max(denoised) < 30   # stopped mid-denoise
    assert snapshot() == before
    assert not pid_alive(job.pid)
    assert not (job.out_dir / "scene.ply").exists() and (job.out_dir / "events.jsonl").is_file()
    assert not job_scene.wonderland.is_running and ops_generate.active_job() is None


@pytest.mark.parametrize("breakage, message", [
    ("no image", "no input image: pick an image"),
    ("missing image file", "does not exist: pick the image again"),
    ("image datablock whose file is gone", "image 'gone.png' has no pixels .*may be missing.*: reload it"),
    ("empty object as camera", "'Empty' is a empty object, not a camera"),
    ("orthographic camera", "only perspective cameras"),
    ("empty frame range", "the frame range 5–2 is empty"),
    ("missing backend", "Backend Python not found .*Set it in Preferences ▸ Add-ons ▸ Wonderland, or click "
                        "Install backend"),
])
def test_bad_input_is_refused_with_a_clear_message_before_anything_starts(job_scene, tmp_path, monkeypatch,
                                                                          breakage, message):
    s = job_scene.wonderland
    if breakage == "no image":
        s.image_path = ""
    elif breakage == "missing image file":
        s.image_path = str(tmp_path / "gone.png")
    elif breakage == "image datablock whose file is gone":
        gone = tmp_path / "gone.png"
        Image.new("RGB", (4, 4)).save(gone)
        s.image = bpy.data.images.load(str(gone))
        gone.unlink()
    elif breakage == "empty object as camera":
        empty = bpy.data.objects.new("Empty", None)
        job_scene.collection.objects.link(empty)
        job_scene.camera = empty
    elif breakage == "orthographic camera":
        job_scene.camera.data.type = 'ORTHO'
    elif breakage == "empty frame range":
        s.frame_start, s.frame_end = 5, 2
    else:
        monkeypatch.setenv(ENV_BACKEND_PYTHON, str(tmp_path / "no-such-python"))
    before = snapshot()
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.wonderland.generate()
    assert snapshot() == before and job_folders(tmp_path) == []
    assert s.last_error and not s.is_running


def test_a_backend_that_dies_without_a_final_event_is_a_failure_with_its_stderr(job_scene, tmp_path, monkeypatch):
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'Traceback: ModuleNotFoundError: No module named torch' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(ENV_BACKEND_PYTHON, str(fake))
    before = snapshot()
    with pytest.raises(RuntimeError, match="exited with code 1 without a final event.*No module named torch"):
        bpy.ops.wonderland.generate()
    assert snapshot() == before
    (folder,) = job_folders(tmp_path)
    assert "No module named torch" in (folder / "stderr.log").read_text()   # the log is kept
    assert "No module named torch" in job_scene.wonderland.last_error
    assert not job_scene.wonderland.is_running and ops_generate.active_job() is None


def test_an_image_datablock_is_written_with_its_raw_pixels_not_the_view_transform(job_scene, tmp_path):
    """Byte images keep their stored values exactly; float (linear) images are encoded to sRGB, the same
    bytes Blender's own Image.save writes, and unlike save_render, which applies the view transform (AgX)."""
    px = np.zeros((2, 3, 4), np.float32)      # bottom row first, as Blender stores it
    px[..., 0], px[..., 1], px[..., 3] = 0.25, np.linspace(0.0, 1.0, 3)[None], 1.0
    px[1, :, 2] = 0.9
    expected_rows = {}
    for is_float in (False, True):
        image = bpy.data.images.new(f"pic{int(is_float)}", 3, 2, alpha=True, float_buffer=is_float)
        image.pixels.foreach_set(px.ravel())
        job_scene.wonderland.image = image
        folder = tmp_path / f"job{int(is_float)}"
        folder.mkdir()
        written = ops_generate.write_input_image(job_scene.wonderland, folder)
        assert written == folder / "image.png"
        got = np.asarray(Image.open(written))
        image.save(filepath=str(tmp_path / f"blender{int(is_float)}.png"), save_copy=True)
        blender_own = np.asarray(Image.open(tmp_path / f"blender{int(is_float)}.png"))
        np.testing.assert_allclose(got.astype(int), blender_own.astype(int), atol=1)
        expected_rows[is_float] = got
    byte_top = expected_rows[False][0]                    # the top row is Blender's last row
    assert byte_top[:, 2].tolist() == [230, 230, 230]     # 0.9 stored in an sRGB byte image stays 0.9
    assert expected_rows[True][0][0, 0] == 137            # linear 0.25 → sRGB 0.537 → 137


def test_open_preview_needs_a_window(generate_ops):
    assert not bpy.ops.wonderland.open_preview.poll()


# --- Install backend ----------------------------------------------------------------------------------

@pytest.fixture
def install_op(addon):
    from wonderland_blender import ops_install
    registered = not hasattr(bpy.types, "WONDERLAND_OT_install_backend")
    if registered:
        ops_install.register()
    yield ops_install
    if registered:
        ops_install.unregister()


@pytest.mark.skipif(bpy.app.online_access, reason="needs Blender's online access off (the bpy module's default)")
def test_install_backend_refuses_when_online_access_is_off(install_op):
    with pytest.raises(RuntimeError, match="online access is off.*Allow Online Access"):
        bpy.ops.wonderland.install_backend()
    assert install_op.install_status() == (False, "")


def test_pip_output_becomes_a_short_status(install_op):
    lines = {
        "Collecting diffusers==0.42.1": "Collecting diffusers==0.42.1",
        "  Downloading torch-2.5.1-cp311-cp311-manylinux1_x86_64.whl (906.4 MB)": "Downloading torch (906.4 MB)",
        "  Downloading tqdm-4.70.1-py3-none-any.whl.metadata (57 kB)": "Downloading tqdm (57 kB)",
        "Building wheels for collected packages: wonderland-backend": "Building wonderland-backend",
        "  Building wheel for wonderland-backend (pyproject.toml): started": "Building wonderland-backend",
        "Installing collected packages: tqdm, numpy, torch": "Installing 3 packages",
        "Successfully installed numpy-1.26.4 torch-2.5.1 tqdm-4.70.1": "Installed",
        "  Using cached numpy-1.26.4.tar.gz": None,
    }
    assert {line: install_op.pip_status(line) for line in lines} == lines


def test_install_steps_run_in_order_and_a_failure_is_explained(install_op, tmp_path):
    ok = [sys.executable, "-c", "print('Collecting plyfile==1.1.3'); print('Successfully installed plyfile-1.1.3')"]
    bad = [sys.executable, "-c", "import sys; print('Collecting torch'); "
                                 "print(\"ERROR: Could not find a version that satisfies the requirement torch\"); "
                                 "print('ERROR: No matching distribution found for torch'); sys.exit(1)"]
    run = install_op.InstallRun([("first", ok), ("second", bad), ("never", ok)], tmp_path / "install.log")
    statuses = []
    deadline = time.monotonic() + 30
    while not run.poll() and time.monotonic() < deadline:
        statuses.append(run.status)
        time.sleep(0.02)
    assert run.finished and run.error.startswith("second failed (exit code 1): ERROR: Could not find a version")
    assert "Likely cause: pip found no package for this Python or platform" in run.error
    log = (tmp_path / "install.log").read_text()
    assert "Successfully installed plyfile-1.1.3" in log and "never" not in log and log.count("$ ") == 2

    good = install_op.InstallRun([("only", ok)], tmp_path / "install.log")
    while not good.poll():
        time.sleep(0.02)
    assert (good.error, good.status) == (None, "Done")


def test_the_base_python_for_the_venv_is_3_11_or_newer(install_op):
    import subprocess
    exe = install_op.find_base_python()
    out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert tuple(map(int, out)) >= (3, 11)
    venv = Path("/nonexistent/venv")
    torch = install_op.choose_torch("Linux", "x86_64", None)
    steps = install_op.install_steps(exe, venv, install_op.BACKEND_SRC, torch)
    assert [label for label, _ in steps] == ["Making the virtual environment", f"pip install of {torch.reason}",
                                             "pip install of the backend", "Checking the backend"]
    assert steps[0][1] == [exe, "-m", "venv", str(venv)]
    assert steps[1][1][-3:] == torch.pip_args()
    assert steps[2][1][-1] == str(install_op.BACKEND_SRC)


def test_an_unedited_image_file_datablock_is_copied_byte_for_byte(job_scene, tmp_path):
    source = tmp_path / "photo.jpg"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(source, quality=90)
    job_scene.wonderland.image = bpy.data.images.load(str(source))
    folder = tmp_path / "job"
    folder.mkdir()
    written = ops_generate.write_input_image(job_scene.wonderland, folder)
    assert written == folder / "image.jpg" and written.read_bytes() == source.read_bytes()
    job_scene.wonderland.image.pixels[0] = 1.0   # painted in Blender: now its pixels are what counts
    written = ops_generate.write_input_image(job_scene.wonderland, folder)
    assert written == folder / "image.png" and np.asarray(Image.open(written))[-1, 0, 0] == 255


def test_a_background_generate_with_a_timeout_stops_a_hung_backend_with_a_clear_message(job_scene, tmp_path,
                                                                                       monkeypatch):
    fake = tmp_path / "hung-python"
    fake.write_text("#!/bin/sh\necho 'loading the model' >&2\nexec sleep 60\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(ENV_BACKEND_PYTHON, str(fake))
    before, started = snapshot(), time.monotonic()
    with pytest.raises(RuntimeError, match="ran longer than the 1.5 s timeout"):
        bpy.ops.wonderland.generate(timeout=1.5)
    assert time.monotonic() - started < 20
    assert snapshot() == before
    assert "timeout" in job_scene.wonderland.last_error
    assert not job_scene.wonderland.is_running and ops_generate.active_job() is None
