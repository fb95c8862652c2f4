"""Render procedural room scenes into our scene folder format (backend/data/folder.py), as training and
held-out test data for the small default model: no public weights or data are needed.

    python tools/synthetic_scenes.py --out DIR --count N [--start-seed S] [--split train|test|heldout]
                                     [--size 96x64] [--frames 49] [--samples 8] [--threads T] [--no-denoise]
                                     [--no-depth] [--generator-version 1|2] [--furniture DIR] [--pictures DIR]
                                     [--plan-frames N]

Generator versions (scene.json's generator_version; tools/synthetic/DATA.md says how to reproduce each):
    1  (default) primitive furniture with procedural textures, uniform sky, AgX Punchy: the shipped model's
       data, which the model card's commands, tests and benchmarks reproduce
    2  real furniture from Sweet Home 3D catalogues (--furniture, Debian's sweethome3d-furniture),
       windows and open yards lit by Blender's CC0 HDRIs, varied view transforms and exposure, wider
       lenses and the short camera moves artists make; opt-in framed photographs (--pictures). The run's
       DATA_CARD.md and assets.json credit every asset used.

Each scene is DIR/scene_SSSSSSS/ (S = the seed, 7 digits) holding
    cameras.json     shared/design/cameras.md, written by the add-on's own trajectory export
    frames/0000.png  one 8-bit sRGB RGB PNG per camera, in the order of cameras.json's frames list
    depth/0000.npy   float32 [H, W] per frame: camera z-depth (OpenCV z, along the view axis, not the ray
                     length) in scene units, Cycles' Depth pass (tools/synthetic/depth.py); not with
                     --no-depth. Readers of the folder format ignore it (scenes without it stay valid)
    scene.json       the seed, split, seed rule and the recipe (room, furniture, lights, camera move)

Seeds and splits (the only source of variety is the seed: the same seed renders the same images):
    train: seeds [S, S + N), which must lie in [0, TEST_SEED_START)
    test:  seeds [TEST_SEED_START + S, TEST_SEED_START + S + N), so the splits never share a scene.
    heldout (version 2): seeds [HELDOUT_SEED_START + S, ...), built only from the held-out assets
           (tools/synthetic/assets.py: about 15% of the furniture models and HDRIs, by a hash of their id),
           which train and test scenes never use.

Resumable: a scene whose folder is complete is skipped; each scene is rendered into a hidden temporary
folder beside it and renamed at the end, so an interrupted run never leaves a half scene.

Reproducible: Cycles on the CPU with a fixed sampling seed and no adaptive sampling renders the same pixels
for the same seed, and the PNGs carry no date or render time, so with --no-denoise the files are
byte-identical. The default denoiser (OpenImageDenoise, which makes 8 samples look clean) is not bitwise
reproducible: a rare pixel may differ by one 8-bit level between runs; cameras.json and scene.json are
always identical.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the add-on package (wonderland_blender) lives at the repository root
    sys.path.insert(0, str(ROOT))

import bpy  # noqa: E402  (after the path set-up above)
import numpy as np  # noqa: E402

from synthetic.assets import AssetPool, load_pool  # noqa: E402
from synthetic.cameras import MOVE_RANGES, key_camera, plan_camera_move  # noqa: E402
from synthetic.catalog import DEBIAN_DIR, CatalogError  # noqa: E402
from synthetic.datacard import write_data_card  # noqa: E402
from synthetic.depth import add_depth_output, exr_file, read_depth  # noqa: E402
from synthetic.furnished import build_furnished_room, choose_look  # noqa: E402
from synthetic.pictures import MATE_NATURE  # noqa: E402
from synthetic.rooms import build_room  # noqa: E402
from backend.commands.training_options import parse_size  # noqa: E402
from wonderland_blender.trajectory import camera_trajectory, write_cameras_json  # noqa: E402

TEST_SEED_START = 1_000_000
HELDOUT_SEED_START = 2_000_000
SPLITS = ("train", "test", "heldout")
SEED_RULE = (f"train: seeds [start, start + count) within [0, {TEST_SEED_START}); "
             f"test: seeds {TEST_SEED_START} + [start, start + count)")
SEED_RULES = {1: SEED_RULE, 2: SEED_RULE + f"; heldout: seeds {HELDOUT_SEED_START} + [start, start + count), "
                                          "held-out furniture and HDRIs only"}
GENERATOR_VERSIONS = (1, 2)
GENERATOR_VERSION = 1     # the default: the shipped model's data; version 2 is opt-in (--generator-version 2)
FRAMES_DIR = "frames"
DEPTH_DIR = "depth"
DEFAULT_SIZE = (96, 64)
DEFAULT_FRAMES = 49       # the paper model's frame count
DEFAULT_SAMPLES = 8       # denoised (OpenImageDenoise): clean at 96x64
LENS_MM = {1: (18.0, 32.0), 2: (18.0, 50.0)}    # on a 36 mm sensor: wide, room-scale views to a normal lens
STAMPS = ("use_stamp", "use_stamp_camera", "use_stamp_date", "use_stamp_filename", "use_stamp_frame",
          "use_stamp_frame_range", "use_stamp_hostname", "use_stamp_lens", "use_stamp_marker", "use_stamp_memory",
          "use_stamp_note", "use_stamp_render_time", "use_stamp_scene", "use_stamp_sequencer_strip", "use_stamp_time")


def scene_seeds(split: str, start: int, count: int) -> range:
    """The seeds of `count` scenes of `split` from `start` (see the module docstring for the rule)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if start < 0 or count < 0:
        raise ValueError(f"--start-seed and --count must be >= 0, got {start} and {count}")
    if split in ("test", "heldout"):
        first = (TEST_SEED_START if split == "test" else HELDOUT_SEED_START) + start
        if split == "test" and start + count > HELDOUT_SEED_START - TEST_SEED_START:
            raise ValueError(f"test seeds reach the held-out range (from {HELDOUT_SEED_START}): lower --count")
        return range(first, first + count)
    if start + count > TEST_SEED_START:
        raise ValueError(f"train seeds {start}..{start + count - 1} reach the test range (from {TEST_SEED_START}): "
                         "lower --start-seed or --count")
    return range(start, start + count)


def scene_name(seed: int) -> str:
    return f"scene_{seed:07d}"


def frame_file(index: int) -> str:
    return f"{index:04d}.png"


def depth_file(index: int) -> str:
    return f"{index:04d}.npy"


def is_complete(folder: Path, frames: int, width: int, height: int, depth: bool = True,
                version: int = GENERATOR_VERSION) -> bool:
    """Whether `folder` holds a finished scene of this size and generator version: cameras.json, scene.json,
    every frame's PNG and, when `depth`, every frame's depth map.

    A finished scene rendered with other settings is an error (mixing them would corrupt the data set)."""
    try:
        cameras = json.loads((folder / "cameras.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    got = (len(cameras.get("frames", [])), cameras.get("width"), cameras.get("height"))
    if got != (frames, width, height):
        raise ValueError(f"{folder} holds a scene of {got[0]} frames at {got[1]}x{got[2]}, not {frames} at "
                         f"{width}x{height}: use another --out folder or the same settings")
    try:
        made_by = json.loads((folder / "scene.json").read_text(encoding="utf-8"))["generator_version"]
    except (OSError, json.JSONDecodeError, KeyError):
        return False
    if made_by != version:
        raise ValueError(f"{folder} was made by generator version {made_by}, not {version}: use another --out "
                         f"folder or --generator-version {made_by}")
    return all((folder / FRAMES_DIR / frame_file(i)).is_file() for i in range(frames)) and \
        (not depth or all((folder / DEPTH_DIR / depth_file(i)).is_file() for i in range(frames)))


@dataclass
class BuiltScene:
    scene: bpy.types.Scene
    camera: bpy.types.Object
    frames: int
    recipe: dict
    version: int = 1


def setup_render(scene, width: int, height: int, samples: int, seed: int, threads: int, denoise: bool) -> None:
    """Cycles on the CPU with a fixed seed and no adaptive sampling (bitwise reproducible), optionally
    denoised (OpenImageDenoise: reproducible to ±1 level on rare pixels), written as 8-bit RGB PNG."""
    scene.render.engine = 'CYCLES'
    cycles = scene.cycles
    cycles.device = 'CPU'
    cycles.samples = samples
    cycles.use_adaptive_sampling = False
    cycles.use_denoising, cycles.denoiser = denoise, 'OPENIMAGEDENOISE'
    cycles.denoising_input_passes, cycles.denoising_prefilter = 'RGB_ALBEDO_NORMAL', 'ACCURATE'
    cycles.seed, cycles.use_animated_seed = seed, False
    cycles.max_bounces, cycles.diffuse_bounces, cycles.glossy_bounces = 3, 2, 1
    cycles.transmission_bounces = cycles.volume_bounces = 0
    cycles.transparent_max_bounces = 2
    cycles.sample_clamp_indirect = 5.0     # no fireflies at low sample counts
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.film_transparent = False
    render.use_persistent_data = True
    render.threads_mode, render.threads = 'FIXED', threads
    render.image_settings.file_format = 'PNG'
    render.image_settings.color_mode = 'RGB'
    render.image_settings.color_depth = '8'
    render.image_settings.compression = 15
    for stamp in STAMPS:  # no date or render time in the PNG metadata: same seed, same bytes
        setattr(render, stamp, False)
    scene.view_settings.view_transform = 'AgX'
    scene.view_settings.look = 'AgX - Punchy'  # AgX alone looks washed out on these pastel rooms
    scene.view_settings.exposure = 0.0


def build_scene(seed: int, *, width: int, height: int, frames: int, samples: int, threads: int,
                denoise: bool = True, version: int = GENERATOR_VERSION, pool: AssetPool | None = None,
                workdir: Path | None = None, plan_frames: int | None = None) -> BuiltScene:
    """A fresh Blender (factory settings, empty) holding the room, lights and animated camera of `seed`: the
    first `frames` poses of a move planned over `plan_frames` (default: `frames`), so that a scene rendered with
    fewer frames than planned is the planned scene's first frames, camera placement and all.

    Version 2 needs the asset `pool` of the scene's split and a `workdir` that holds the furniture's
    extracted models and textures until the render is done."""
    if version not in GENERATOR_VERSIONS:
        raise ValueError(f"unknown generator version {version}: use one of {GENERATOR_VERSIONS}")
    if version == 2 and (pool is None or workdir is None):
        raise ValueError("generator version 2 needs an asset pool (synthetic.assets.load_pool) and a workdir")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    rng = random.Random(seed)
    scene = bpy.context.scene
    room = build_room(rng) if version == 1 else build_furnished_room(rng, pool, Path(workdir))
    cam_data = bpy.data.cameras.new("Camera")
    cam_data.lens = rng.uniform(*LENS_MM[version])
    cam_data.clip_start, cam_data.clip_end = 0.05, 100.0
    camera = bpy.data.objects.new("Camera", cam_data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    bpy.context.view_layer.update()
    poses, move = plan_camera_move(rng, scene, room, plan_frames or frames, MOVE_RANGES[version])
    key_camera(scene, camera, poses[:frames], frame_start=0)
    scene.frame_start, scene.frame_end = 0, frames - 1
    setup_render(scene, width, height, samples, seed, threads, denoise)
    recipe = {"room": room.recipe, "camera": {**move, "lens_mm": round(cam_data.lens, 4)}}
    if version == 2:
        recipe["look"] = choose_look(rng, scene, Path(workdir))
        recipe["assets"] = scene_assets(room.recipe, pool)
    return BuiltScene(scene, camera, frames, recipe, version)


def scene_assets(room_recipe: dict, pool: AssetPool) -> list[dict]:
    """The credits of the furniture models, pictures and the HDRI a version-2 room uses, each once, sorted by
    id."""
    models = {m.id: m for m in pool.furniture}
    hdris = {h.id: h for h in pool.hdris}
    used = {p["id"]: models[p["id"]].credit() for p in room_recipe["furniture"]}
    used[room_recipe["world"]["hdri"]] = hdris[room_recipe["world"]["hdri"]].credit()
    pictures = {p.id: p for p in pool.pictures}
    for wall in room_recipe["wall_sides"]:
        if "picture" in wall:
            used[wall["picture"]["picture"]] = pictures[wall["picture"]["picture"]].credit()
    return [{**used[k], "split": pool.split} for k in sorted(used)]


@contextlib.contextmanager
def quiet_stdout():
    """Silence Blender's per-frame 'Saved:' lines (written by C code to fd 1) so progress stays readable."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def write_scene(built: BuiltScene, folder: Path, extra: dict, depth: bool = True) -> None:
    """Render every frame into folder/frames (and its depth into folder/depth) and write cameras.json and
    scene.json there."""
    scene = built.scene
    cameras = camera_trajectory(scene, built.camera, 0, built.frames - 1)
    (folder / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
    exr_dir = folder / ".depth_exr"
    if depth:
        add_depth_output(scene, exr_dir)
    scene.render.filepath = str(folder / FRAMES_DIR / "####")
    scene.render.use_file_extension = True
    with quiet_stdout():
        bpy.ops.render.render(animation=True)
    missing = [frame_file(i) for i in range(built.frames) if not (folder / FRAMES_DIR / frame_file(i)).is_file()]
    if missing:
        raise RuntimeError(f"Blender did not write frames {', '.join(missing[:5])} into {folder / FRAMES_DIR}")
    if depth:
        (folder / DEPTH_DIR).mkdir(exist_ok=True)
        for i in range(built.frames):
            np.save(folder / DEPTH_DIR / depth_file(i), read_depth(exr_file(exr_dir, scene.frame_start + i)))
        shutil.rmtree(exr_dir)
    write_cameras_json(cameras, str(folder / "cameras.json"))
    info = {**extra, "generator_version": built.version, "blender": bpy.app.version_string, **built.recipe}
    (folder / "scene.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


def check_plan_frames(frames: int, plan_frames: int | None) -> None:
    """A move is planned over at least the frames rendered (ValueError otherwise)."""
    if plan_frames is not None and plan_frames < frames:
        raise ValueError(f"--plan-frames {plan_frames} is fewer than --frames {frames}: plan the move over at "
                         "least the frames rendered")


def render_scene(out: Path, seed: int, split: str, *, width: int = DEFAULT_SIZE[0], height: int = DEFAULT_SIZE[1],
                 frames: int = DEFAULT_FRAMES, samples: int = DEFAULT_SAMPLES, threads: int = 0,
                 denoise: bool = True, depth: bool = True, version: int = GENERATOR_VERSION,
                 pool: AssetPool | None = None, plan_frames: int | None = None) -> bool:
    """Render the scene of `seed` into out/scene_SSSSSSS atomically; False when it was already complete
    (with `depth`, a scene written without depth maps is rendered again). Version 2 needs the asset pool
    of `split` (synthetic.assets.load_pool). `plan_frames` (>= frames): the camera move planned over that many
    frames, of which the first `frames` are rendered."""
    if version == 1 and (split == "heldout" or pool is not None):
        raise ValueError("the held-out-asset split and asset pools need generator version 2 (version 1 uses no "
                         "assets)")
    if pool is not None and pool.split != ("heldout" if split == "heldout" else "train"):
        raise ValueError(f"a {split} scene cannot use the {pool.split} assets: load the pool for {split!r}")
    check_plan_frames(frames, plan_frames)
    final = Path(out) / scene_name(seed)
    for stale in Path(out).glob(f".{final.name}.tmp-*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    if is_complete(final, frames, width, height, depth, version):
        return False
    tmp = Path(out) / f".{final.name}.tmp-{os.getpid()}"
    try:
        with quiet_stdout():  # the OBJ importer's timing lines
            built = build_scene(seed, width=width, height=height, frames=frames, samples=samples,
                                threads=threads or len(os.sched_getaffinity(0)), denoise=denoise, version=version,
                                pool=pool, workdir=tmp / ".models", plan_frames=plan_frames)
        write_scene(built, tmp, {"seed": seed, "split": split, "seed_rule": SEED_RULES[version], "width": width,
                                 "height": height, "frames": frames, "samples": samples, "denoise": denoise,
                                 "depth": depth, **({} if plan_frames is None else {"plan_frames": plan_frames})},
                    depth=depth)
        shutil.rmtree(tmp / ".models", ignore_errors=True)
        if final.exists():  # an incomplete scene from elsewhere: replaced whole
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder that receives one sub-folder per scene")
    parser.add_argument("--count", type=positive, required=True, help="number of scenes")
    parser.add_argument("--start-seed", type=int, default=0, help="first seed (an offset in the test range)")
    parser.add_argument("--split", choices=SPLITS, default="train")
    parser.add_argument("--size", type=parse_size, default=DEFAULT_SIZE, help="render size WxH (default 96x64)")
    parser.add_argument("--frames", type=positive, default=DEFAULT_FRAMES)
    parser.add_argument("--plan-frames", type=positive, default=None,
                        help="plan each camera move over this many frames and render its first --frames (default: "
                             "--frames): `--frames 1 --plan-frames 9` renders exactly frame 0 of the 9-frame scenes, "
                             "whose first camera sits where the whole move fits")
    parser.add_argument("--samples", type=positive, default=DEFAULT_SAMPLES, help="Cycles samples per pixel")
    parser.add_argument("--threads", type=int, default=0, help="render threads (default: all usable cores)")
    parser.add_argument("--no-denoise", dest="denoise", action="store_false",
                        help="bitwise-reproducible frames (the denoiser may move rare pixels by one level); "
                             "raise --samples to about 64 then")
    parser.add_argument("--no-depth", dest="depth", action="store_false",
                        help=f"do not write {DEPTH_DIR}/NNNN.npy (per-frame camera z-depth, for evaluation)")
    parser.add_argument("--generator-version", type=int, choices=GENERATOR_VERSIONS, default=GENERATOR_VERSION,
                        help="1: primitive rooms (the shipped model's data, default); 2: real furniture, HDRIs")
    parser.add_argument("--furniture", type=Path, default=DEBIAN_DIR,
                        help=f"folder of Sweet Home 3D .sh3f furniture catalogues, version 2 (default {DEBIAN_DIR})")
    parser.add_argument("--pictures", type=Path, default=None,
                        help="folder of credited photographs to hang framed on the walls, version 2 (opt-in; "
                             f"e.g. {MATE_NATURE} from Debian's mate-backgrounds, GPL-2+)")
    args = parser.parse_args(argv)
    pool = None
    try:
        seeds = scene_seeds(args.split, args.start_seed, args.count)
        check_plan_frames(args.frames, args.plan_frames)
        if args.generator_version == 1 and (args.split == "heldout" or args.pictures):
            raise ValueError("--split heldout and --pictures need --generator-version 2 (version 1 uses no assets)")
        if args.generator_version == 2:
            pool = load_pool(args.furniture, args.split, args.pictures)
    except (ValueError, CatalogError) as e:
        parser.error(str(e))
    args.out.mkdir(parents=True, exist_ok=True)
    width, height = args.size
    t_all, rendered = time.perf_counter(), 0
    for i, seed in enumerate(seeds, 1):
        t = time.perf_counter()
        try:
            done = render_scene(args.out, seed, args.split, width=width, height=height, frames=args.frames,
                                samples=args.samples, threads=args.threads, denoise=args.denoise,
                                depth=args.depth, version=args.generator_version, pool=pool,
                                plan_frames=args.plan_frames)
        except Exception as e:  # noqa: BLE001  (report which scene failed, then stop)
            print(f"scene {i}/{len(seeds)} seed {seed}: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            write_data_card(args.out, pool.catalogs if pool else [])  # the card covers the scenes that are there
            return 1
        rendered += done
        status = f"{time.perf_counter() - t:.1f} s" if done else "already complete, skipped"
        print(f"scene {i}/{len(seeds)} seed {seed}: {status}", flush=True)
    total = time.perf_counter() - t_all
    write_data_card(args.out, pool.catalogs if pool else [])
    print(f"{rendered} scenes rendered, {len(seeds) - rendered} skipped, {total:.1f} s"
          + (f" ({total / rendered:.1f} s per rendered scene)" if rendered else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
