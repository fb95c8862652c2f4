"""The headless Blender demo (`python3 build.py demo`): each bundled picture + a preset camera move →
Gaussians in a .blend, through the add-on's own operators in the real bpy module.

For each input in tools/demo_inputs/ it starts from an empty scene, enables the add-on from this checkout,
keys a camera move with `wonderland.add_trajectory`, runs `wonderland.generate` (synchronous in background
mode, with the checkout's .venv as the backend), then writes into OUT/<input>/: scene.blend (camera + point
cloud), scene.ply, preview/NNNN.png and contact_sheet.png (the picture beside the previews).

    .venv/bin/python tools/demo.py [--model NAME|DIR] [--steps N] [--previews N] [--out DIR] [--only NAME]
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the add-on package comes from this checkout

import bpy  # noqa: E402  (first: it puts Blender's script modules, addon_utils among them, on sys.path)
import addon_utils  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

ADDON = "wonderland_blender"
INPUTS_DIR = Path(__file__).resolve().parent / "demo_inputs"
BACKEND_PYTHON = ROOT / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
# The backend's shipped default model (backend/pipelines/wonderland.py: SHIPPED_DIR / DEFAULT_MODEL with its
# wonderland.json). Checked by path: importing the backend here would load torch into Blender for nothing.
SHIPPED_DEFAULT = ROOT / "backend" / "weights" / "default" / "wonderland.json"
FALLBACK_MODEL = "tiny"
FRAMES = (1, 9)           # the default model's frame count; the backend resamples longer moves to the model's
SEED = 7


@dataclass(frozen=True)
class DemoInput:
    """A picture, the camera it was taken with where known (what an artist lines up: the default's depth prior
    reads the camera's field of view and tilt), and the move."""
    file: str        # in tools/demo_inputs/
    preset: str      # wonderland.add_trajectory's preset
    params: dict     # the preset's parameters
    lens_mm: float = 50.0      # on Blender's 36 mm sensor
    pitch_deg: float = 0.0     # below 0: looking down


INPUTS = {
    # the room is frame 0 of the generator's test seed 1,000,000: its camera (scene.json, cameras.json)
    "room": DemoInput("room.png", "dolly_in", {"amount": 0.8}, lens_mm=23.14, pitch_deg=-25.4),
    "rocket": DemoInput("rocket.jpg", "orbit", {"distance": 6.0, "angle": math.radians(20.0)}),
}

# Contact sheet: the picture, then the previews, COLUMNS to a row; each cell CELL_W wide with a label below.
COLUMNS, CELL_W, LABEL_H, PAD, TITLE_H = 3, 192, 16, 6, 22
BACKGROUND, TEXT, WARNING_TEXT = (30, 30, 34), (235, 235, 235), (255, 170, 60)


class DemoError(Exception):
    """A step of the demo failed; the message says which and where to look."""


@dataclass
class DemoResult:
    name: str
    folder: Path
    count: int
    job_seconds: float       # the backend job, as the add-on measured it
    seconds: float           # the whole input: scene set-up, job, import, saving
    random_weights: bool


# --- model ----------------------------------------------------------------------------------------

def pick_model(requested: str | None) -> str:
    """The model to run: the one asked for, else the shipped default when it is installed, else `tiny`."""
    if requested:
        return str(Path(requested).resolve()) if Path(requested).is_dir() else requested
    return "default" if SHIPPED_DEFAULT.is_file() else FALLBACK_MODEL


# --- Blender --------------------------------------------------------------------------------------

def fresh_blender():
    """An empty factory-settings scene with the add-on enabled from this checkout."""
    if ADDON in bpy.context.preferences.addons:
        addon_utils.disable(ADDON, default_set=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if addon_utils.enable(ADDON, default_set=True, handle_error=None) is None:
        raise DemoError(f"enabling the add-on {ADDON} from {ROOT} failed")
    return bpy.context.scene


def set_up_scene(scene, image: Path, spec: DemoInput, model: str, steps: int) -> None:
    """Render size = the picture's size (so the camera has its aspect), the picture's camera, a preset camera
    move on it, the job inputs."""
    with Image.open(image) as im:
        width, height = im.size
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    scene.frame_start, scene.frame_end = FRAMES
    scene.frame_set(FRAMES[0])
    from wonderland_blender.presets import new_camera  # see point_cloud
    camera = new_camera(bpy.context)                    # level, the scene's camera: the move is keyed on it
    camera.data.lens = spec.lens_mm
    camera.rotation_euler.x += math.radians(spec.pitch_deg)
    try:  # an operator that reports an error raises RuntimeError with the report in it
        bpy.ops.wonderland.add_trajectory(preset=spec.preset, **spec.params)
    except RuntimeError as e:
        raise DemoError(f"wonderland.add_trajectory(preset={spec.preset!r}) failed: {e}") from None
    settings = scene.wonderland
    settings.image_path, settings.model, settings.steps, settings.seed = str(image), model, steps, SEED


def point_cloud():
    """The point cloud the generate operator imported into the "Wonderland" collection."""
    # Imported once addon_utils has enabled the add-on: an earlier import makes it reload the package.
    from wonderland_blender.pointcloud import COLLECTION_NAME
    coll = bpy.data.collections.get(COLLECTION_NAME)
    clouds = [o for o in (coll.objects if coll else []) if o.type == 'POINTCLOUD']
    if len(clouds) != 1:
        raise DemoError(f"expected one point cloud in the Wonderland collection, found {len(clouds)}")
    return clouds[0]


def save_blend(scene, stage: Path, final: Path, previews: list[Path]) -> None:
    """Point the .blend's preview image at the copies in `stage`/preview, save, and make paths relative so
    the folder can move (it is renamed from `stage` to `final` afterwards)."""
    from wonderland_blender.previews import PREVIEW_COUNT_KEY  # (after enabling, as in point_cloud)
    for image in bpy.data.images:
        if image.get(PREVIEW_COUNT_KEY) and previews:
            image.filepath = str(previews[0])
    scene.wonderland.last_result_path = str(final / "scene.ply")
    path = str(stage / "scene.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.file.make_paths_relative()
    bpy.ops.wm.save_mainfile(filepath=path)
    Path(path + "1").unlink(missing_ok=True)  # the backup copy the second save made of the first


# --- files ----------------------------------------------------------------------------------------

def sheet_geometry(cells: int, cell_h: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """(sheet width, height) and the top-left corner of each cell's image, for `cells` images cell_h tall."""
    rows = max(1, math.ceil(cells / COLUMNS))
    columns = min(cells, COLUMNS)
    size = (PAD + columns * (CELL_W + PAD), TITLE_H + PAD + rows * (cell_h + LABEL_H + PAD))
    corners = [(PAD + (i % COLUMNS) * (CELL_W + PAD), TITLE_H + PAD + (i // COLUMNS) * (cell_h + LABEL_H + PAD))
               for i in range(cells)]
    return size, corners


def cell_height(image_size: tuple[int, int]) -> int:
    width, height = image_size
    return max(1, round(CELL_W * height / width))


def contact_sheet(picture: Path, previews: list[Path], title: str, warn: bool, path: Path) -> None:
    """The picture and its previews in a labelled grid, written atomically as a PNG."""
    with Image.open(picture) as im:
        first = im.convert("RGB")
    cell_h = cell_height(first.size)
    images = [(first, f"input: {picture.name}")]
    for i, p in enumerate(previews):
        with Image.open(p) as im:
            images.append((im.convert("RGB"), f"preview {i + 1}/{len(previews)}"))
    size, corners = sheet_geometry(len(images), cell_h)
    sheet = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    draw.text((PAD, 4), title, fill=WARNING_TEXT if warn else TEXT, font=font)
    for (image, label), (x, y) in zip(images, corners):
        sheet.paste(image.resize((CELL_W, cell_h), Image.Resampling.LANCZOS), (x, y))
        draw.text((x, y + cell_h + 2), label, fill=TEXT, font=font)
    fd, tmp = tempfile.mkstemp(prefix=".contact_sheet.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        sheet.save(tmp, format="PNG")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the sheet is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def replace_folder(stage: Path, final: Path) -> None:
    """Put the finished `stage` folder where `final` was, so a re-run never leaves a mix of old and new."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(stage, final)
        shutil.rmtree(old)
    else:
        os.replace(stage, final)


# --- one input ------------------------------------------------------------------------------------

def run_input(name: str, spec: DemoInput, model: str, steps: int, previews: int, out: Path) -> DemoResult:
    started = time.perf_counter()
    picture = INPUTS_DIR / spec.file
    scene = fresh_blender()
    set_up_scene(scene, picture, spec, model, steps)
    jobs_root = Path(tempfile.mkdtemp(prefix=f"wonderland-demo-{name}-"))  # removed once the result is copied
    bpy.context.preferences.addons[ADDON].preferences.output_dir = str(jobs_root)
    print(f"\n=== {name}: {spec.file}, {spec.preset} camera move over frames {FRAMES[0]}-{FRAMES[1]}, "
          f"model {model}, {steps or 'its own'} steps ===", flush=True)
    try:
        outcome = bpy.ops.wonderland.generate(extra_args=f"--previews {previews} --preview-size {CELL_W}")
    except RuntimeError as e:
        raise DemoError(f"{name}: {e}".replace("Error: ", "", 1)) from None
    if outcome != {'FINISHED'}:  # cancelled (Ctrl+C): a warning, not an error
        raise DemoError(f"{name}: {scene.wonderland.status}")
    settings = scene.wonderland
    job = Path(settings.last_result_path).parent
    obj = point_cloud()
    if len(obj.data.points) != settings.last_count:
        raise DemoError(f"{obj.name} holds {len(obj.data.points)} points but the job made {settings.last_count}")

    final = out / name
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
    try:
        shutil.copyfile(job / "scene.ply", stage / "scene.ply")
        shutil.copyfile(job / "meta.json", stage / "meta.json")
        (stage / "preview").mkdir()
        copied = []
        for p in sorted((job / "preview").glob("*.png")):
            shutil.copyfile(p, stage / "preview" / p.name)
            copied.append(stage / "preview" / p.name)
        save_blend(scene, stage, final, copied)
        random_weights = '"random_weights": true' in (job / "meta.json").read_text()
        title = f"{name}: {spec.preset} move, model {model}, {settings.last_count:,} Gaussians"
        if random_weights:
            title += "  (RANDOM WEIGHTS: noise, flow demo only)"
        contact_sheet(picture, copied, title, random_weights, stage / "contact_sheet.png")
        stage.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
        replace_folder(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    shutil.rmtree(jobs_root, ignore_errors=True)
    return DemoResult(name, final, settings.last_count, settings.last_seconds, time.perf_counter() - started,
                      random_weights)


# --- main -----------------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/demo.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a model name or folder (default: the shipped default model if installed, "
                                   f"else '{FALLBACK_MODEL}': random weights)")
    p.add_argument("--steps", type=int, default=0, help="denoising steps (default: the model's own)")
    p.add_argument("--previews", type=int, default=5, help="preview renders per input (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "demo_out"), help="output folder (default: %(default)s)")
    p.add_argument("--only", choices=sorted(INPUTS), action="append", help="run just this input (repeatable)")
    args = p.parse_args(argv)
    if args.steps < 0 or args.previews < 1:
        p.error("--steps must be at least 0 (the model's own) and --previews at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not BACKEND_PYTHON.is_file():
        print(f"error: no backend python at {BACKEND_PYTHON}: run 'python3 build.py setup' first", file=sys.stderr)
        return 1
    os.environ["WONDERLAND_BACKEND_PYTHON"] = str(BACKEND_PYTHON)
    model = pick_model(args.model)
    if model == FALLBACK_MODEL:
        why = "" if args.model else f"no trained default model is installed ({SHIPPED_DEFAULT} is missing), so "
        print(f"NOTE: {why}this demo uses --model {FALLBACK_MODEL}: seeded RANDOM weights.\nNOTE: the Gaussians "
              "and previews are NOISE from an untrained model; they demonstrate the flow (picture + camera move "
              "-> Gaussians in Blender) only.", flush=True)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for name in args.only or INPUTS:
            results.append(run_input(name, INPUTS[name], model, args.steps, args.previews, out))
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if ADDON in bpy.context.preferences.addons:
            addon_utils.disable(ADDON, default_set=True)

    print(f"\nDone. Results are in {out}:")
    for r in results:
        print(f"  {r.folder / 'scene.blend'}  (open in Blender: camera move + Gaussians in 'Wonderland')")
        print(f"  {r.folder / 'contact_sheet.png'}  (the picture and the previews)")
    print("\nSummary:")
    for r in results:
        print(f"  {r.name}: {r.count:,} Gaussians, backend job {r.job_seconds:.1f} s, {r.seconds:.1f} s in all"
              + ("  [random weights: noise]" if r.random_weights else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
