"""Generator version 2 (tools/synthetic_scenes.py) in the real bpy, on a tiny furniture catalogue made here
(a textured cube as OBJ+MTL+PNG zipped into a .sh3f with its properties), so Debian's 120 MB package is not
needed: the furniture shows in the frames, every asset is credited, the held-out split never uses a training
asset, a seed always gives the same scene.json, and a missing catalogue says what to install."""
from __future__ import annotations

import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import bpy
import numpy as np
import pytest
from mathutils import Vector
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import synthetic_scenes as gen  # noqa: E402
from synthetic.assets import asset_split, load_pool  # noqa: E402
from synthetic.catalog import import_model, load_catalogs  # noqa: E402
from synthetic.datacard import write_data_card  # noqa: E402
from synthetic.exposure import preview_mean, meter_exposure  # noqa: E402
from synthetic.furnished import LOOKS  # noqa: E402
from synthetic.pictures import PictureError, load_pictures  # noqa: E402

pytestmark = pytest.mark.blender
# version 1's recipes of seeds 0, 3, 4 and 1,000,005, computed with the generator before version 2
V1_RECIPES_SHA256 = "df07f43883d92544d4727201baa05dc9e0a7ce111c7559f2bc2bf75d80c4ff62"
TINY = dict(width=48, height=32, frames=3, samples=2, threads=2, version=2)
GREEN = (0, 255, 0)
CUBE_OBJ = """mtllib box.mtl
v -1 0 -1\nv 1 0 -1\nv 1 2 -1\nv -1 2 -1\nv -1 0 1\nv 1 0 1\nv 1 2 1\nv -1 2 1
vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1
usemtl paint
f 1/1 2/2 3/3 4/4\nf 5/1 8/4 7/3 6/2\nf 1/1 5/2 6/3 2/4\nf 2/1 6/2 7/3 3/4\nf 3/1 7/2 8/3 4/4
usemtl trim
f 5/1 1/2 4/3 8/4
"""
# the trim's texture is missing from the catalogue, as some real ones are: its Kd green must show instead
CUBE_MTL = "newmtl paint\nKd 1 1 1\nmap_Kd paint.png\nnewmtl trim\nKd 0 1 0\nmap_Kd textures/absent.png\n"
# id suffix, name, category, width, depth, height (cm), extra properties
ENTRIES = [(f"box-{i:02d}", f"Green box {i}", "Living room", 60, 50, 80, {}) for i in range(8)] + [
    ("table", "Green table", "Kitchen", 90, 60, 75, {}),
    ("cup", "Green cup", "Kitchen", 12, 12, 16, {}),
    ("door", "Front door", "Doors and windows", 90, 10, 210, {"doorOrWindow": "true"}),
    ("woman", "Woman", "Characters", 50, 30, 170, {}),
    ("lamp", "Wall lamp", "Lights", 20, 20, 30, {"elevation": "180"})]
USED = [e[0] for e in ENTRIES[:10]]


def make_catalog(folder: Path) -> Path:
    """folder/Fixture.sh3f: every entry's model is the same green cube (a few hundred bytes in all)."""
    png = io.BytesIO()
    Image.new("RGB", (4, 4), GREEN).save(png, "PNG")
    lines = ["# a test catalogue", "id=Test#Fixture", "name=Fixture catalogue", "version=1.0",
             "license=Creative Commons Attribution 3.0 license", ""]
    for i, (key, name, category, w, d, h, extra) in enumerate(ENTRIES, 1):
        props = {"id": f"Fixture#{key}", "name": name, "category": category, "model": "/fixture/box/box.obj",
                 "width": w, "depth": d, "height": h, "creator": f"Maker \\u00e9 {i}", "doorOrWindow": "false",
                 **extra}
        lines += [f"{k}#{i}={v}" for k, v in props.items()] + [""]
    path = folder / "Fixture.sh3f"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("PluginFurnitureCatalog.properties", "\n".join(lines).encode("latin-1"))
        z.writestr("fixture/box/box.obj", CUBE_OBJ)
        z.writestr("fixture/box/box.mtl", CUBE_MTL)
        z.writestr("fixture/box/paint.png", png.getvalue())
    return path


COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: nature/red.png
       nature/sky.png
Copyright: 2020, Jane Doe <jane@example.org>
License: GPL-2+

Files: *
Copyright: 2021, The Packagers
License: GPL-2+
"""


def make_pictures(folder: Path, names=("red.png", "sky.png")) -> Path:
    """folder/*.png (2:1 plain colour photos) with a DEP-5 copyright file crediting red.png and sky.png."""
    folder.mkdir()
    for name in names:
        Image.new("RGB", (8, 4), (255, 0, 0) if name == "red.png" else (0, 0, 255)).save(folder / name)
    (folder / "copyright").write_text(COPYRIGHT)
    return folder


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("furniture")
    make_catalog(folder)
    return folder


@pytest.fixture(scope="module")
def rendered(catalog_dir, tmp_path_factory):
    """Train seed 7 rendered into two folders (without the denoiser: bitwise), held-out seed 2,000,001 into
    the first."""
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    train, heldout = load_pool(catalog_dir, "train"), load_pool(catalog_dir, "heldout")
    assert gen.render_scene(a, 7, "train", **TINY, pool=train, denoise=False)
    assert gen.render_scene(b, 7, "train", **TINY, pool=train, denoise=False)
    assert gen.render_scene(a, gen.HELDOUT_SEED_START + 1, "heldout", **TINY, pool=heldout)
    return a, b


def test_catalog_is_read_and_unusable_models_skipped(catalog_dir):
    models, catalogs = load_catalogs(catalog_dir)
    assert [m.id for m in models] == sorted(f"Fixture#{k}" for k in USED)
    assert catalogs == [{"file": "Fixture.sh3f", "id": "Test#Fixture", "name": "Fixture catalogue", "description": "",
                         "version": "1.0", "license": "Creative Commons Attribution 3.0 license", "provider": "",
                         "models_used": 10, "models_skipped": 3}]
    table = next(m for m in models if m.id == "Fixture#table")
    assert (table.name, table.size_cm, table.top_cm, table.creator) == ("Green table", (90, 60, 75), 75, "Maker é 9")


def test_imported_model_has_the_catalogue_size(catalog_dir, tmp_path):
    models, _ = load_catalogs(catalog_dir)
    obj = import_model(next(m for m in models if m.id == "Fixture#table"), catalog_dir, tmp_path)
    co = np.array([v.co[:] for v in obj.data.vertices])
    assert np.allclose(co.min(axis=0), (-0.45, -0.30, 0.0)) and np.allclose(co.max(axis=0), (0.45, 0.30, 0.75))
    images = {m.name: [n.image.filepath for n in m.node_tree.nodes if n.type == 'TEX_IMAGE']
              for m in obj.data.materials}
    assert images == {"paint": [str(tmp_path / "fixture" / "box" / "paint.png")], "trim": []}  # no magenta


def test_furniture_shows_in_the_frame(catalog_dir, tmp_path):
    """Pixels of frame 0 whose ray hits a catalogue piece are its texture's green."""
    pool = load_pool(catalog_dir, "train")
    built = gen.build_scene(7, **TINY, pool=pool, workdir=tmp_path / "models")
    gen.write_scene(built, tmp_path / "scene", {})
    cameras = json.loads((tmp_path / "scene" / "cameras.json").read_text())
    frame = np.asarray(Image.open(tmp_path / "scene" / "frames" / "0000.png"), dtype=np.int16)
    K, c2w = np.array(cameras["frames"][0]["K"]), np.array(cameras["frames"][0]["c2w"])
    built.scene.frame_set(0)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    pieces = [o.name for o in bpy.data.objects if o.name.startswith("Green")]
    assert len(pieces) == len(built.recipe["room"]["furniture"]) >= 4
    hits = []
    for y in range(1, 32, 2):
        for x in range(1, 48, 2):
            ray = c2w[:3, :3] @ np.linalg.inv(K) @ np.array([x + 0.5, y + 0.5, 1.0])
            found, _, _, _, obj, _ = built.scene.ray_cast(depsgraph, Vector(c2w[:3, 3]), Vector(ray).normalized())
            if found and obj.name in pieces:
                hits.append(frame[y, x])
    assert len(hits) >= 10, f"only {len(hits)} sampled pixels see furniture"
    r, g, b = np.median(np.array(hits), axis=0)
    assert g > r + 40 and g > b + 40, f"furniture pixels are {(r, g, b)}, not green"


def test_exposure_is_metered_to_the_target(catalog_dir, tmp_path):
    """A dark and a bright target each bring frame 0's mean 8-bit level within 15 of themselves."""
    built = gen.build_scene(7, **TINY, pool=load_pool(catalog_dir, "train"), workdir=tmp_path)
    for target in (60.0, 170.0):
        built.scene.view_settings.exposure = 0.0
        meter_exposure(built.scene, target, tmp_path)
        assert abs(preview_mean(built.scene, tmp_path / "check.png") - target) < 15


def test_same_seed_same_scene_and_every_asset_credited(rendered, catalog_dir):
    a, b = rendered
    scene = a / "scene_0000007"
    assert (scene / "scene.json").read_bytes() == (b / "scene_0000007" / "scene.json").read_bytes()
    assert (scene / "cameras.json").read_bytes() == (b / "scene_0000007" / "cameras.json").read_bytes()
    for frame in (scene / "frames").iterdir():
        assert frame.read_bytes() == (b / "scene_0000007" / "frames" / frame.name).read_bytes()
    info = json.loads((scene / "scene.json").read_text())
    assert info["generator_version"] == 2 and info["seed_rule"] == gen.SEED_RULES[2]
    used = {p["id"] for p in info["room"]["furniture"]} | {info["room"]["world"]["hdri"]}
    assert {x["id"] for x in info["assets"]} == used
    for asset in info["assets"]:
        assert asset["license"] and asset["creator"] and asset["split"] == "train"
    assert info["look"]["view_transform"] in {t for t, _ in LOOKS}

    data = write_data_card(a, load_pool(catalog_dir, "train").catalogs)
    assert data["scenes"] == {"heldout": 1, "train": 1}
    assert json.loads((a / "assets.json").read_text()) == data
    card = (a / "DATA_CARD.md").read_text()
    for asset in data["assets"]:
        assert asset.get("file", asset["id"]) in card
    assert "Maker é" in card and "CC0" in card and "Fixture.sh3f" in card
    assert not list(a.glob(".*.tmp")) and not list(a.glob(".scene_*"))  # nothing half-written left


def test_version_1_data_card_credits_no_catalogue(tmp_path):
    """Version-1 scenes use no external asset: their card says so instead of crediting Sweet Home 3D."""
    for seed, split in ((0, "train"), (1_000_000, "test")):
        (tmp_path / f"scene_{seed:07d}").mkdir()
        (tmp_path / f"scene_{seed:07d}" / "scene.json").write_text(
            json.dumps({"generator_version": 1, "split": split, "seed": seed}))
    data = write_data_card(tmp_path, [])
    assert data["assets"] == [] and data["scenes"] == {"test": 1, "train": 1}
    card = (tmp_path / "DATA_CARD.md").read_text()
    assert "## Furniture (0 models)\n\nProcedural furniture only (generator version 1).\n" in card
    assert "Sweet Home" not in card and "| model |" not in card and "| file | source |" not in card
    assert "## HDRIs (0)\n\nNone (generator version 1's uniform sky).\n" in card


def test_heldout_split_never_uses_a_training_asset(rendered, catalog_dir, tmp_path):
    info = json.loads((rendered[0] / f"scene_{gen.HELDOUT_SEED_START + 1:07d}" / "scene.json").read_text())
    assert info["split"] == "heldout" and info["assets"]
    assert all(asset_split(x["id"] if x["id"].startswith("hdri:") else "furniture:" + x["id"]) == "heldout"
               for x in info["assets"])
    train, heldout = load_pool(catalog_dir, "train"), load_pool(catalog_dir, "heldout")
    assert {m.id for m in train.furniture}.isdisjoint(m.id for m in heldout.furniture)
    assert {h.id for h in train.hdris}.isdisjoint(h.id for h in heldout.hdris)
    assert heldout.hdris and train.hdris and len(train.hdris) + len(heldout.hdris) == 8
    for split, pool, seeds in (("train", train, range(3)), ("heldout", heldout, range(2_000_000, 2_000_003))):
        for seed in seeds:  # built, not rendered: the recipe lists what the scene holds
            built = gen.build_scene(seed, **TINY, pool=pool, workdir=tmp_path / str(seed))
            assert {x["split"] for x in built.recipe["assets"]} == {pool.split}
            assert {p["id"] for p in built.recipe["room"]["furniture"]} <= {m.id for m in pool.furniture}
    with pytest.raises(ValueError, match="cannot use the heldout assets"):
        gen.render_scene(tmp_path, 0, "train", **TINY, pool=heldout)
    with pytest.raises(ValueError, match="made by generator version 2, not 1"):
        gen.render_scene(rendered[0], 7, "train", **{**TINY, "version": 1})


def test_missing_catalogue_says_what_to_install(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gen.main(["--out", str(tmp_path / "out"), "--count", "1", "--generator-version", "2",
                  "--furniture", str(tmp_path / "none")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "apt-get install sweethome3d-furniture" in err and "--furniture DIR" in err
    assert "--generator-version 1" in err
    with pytest.raises(SystemExit):
        gen.main(["--out", str(tmp_path / "out"), "--count", "1", "--split", "heldout", "--generator-version", "1"])
    assert "need --generator-version 2" in capsys.readouterr().err


def test_version_1_recipes_are_unchanged():
    """The shipped model's data: version 1's recipes for these seeds hash as they did before version 2."""
    recipes = {seed: gen.build_scene(seed, width=48, height=32, frames=9, samples=2, threads=1, version=1).recipe
               for seed in (0, 3, 4, 1_000_005)}
    text = json.dumps(recipes, sort_keys=True)
    assert hashlib.sha256(text.encode()).hexdigest() == V1_RECIPES_SHA256


def test_pictures_are_credited_held_out_and_hung_facing_the_room(catalog_dir, tmp_path):
    pictures = make_pictures(tmp_path / "pictures")
    jane = ("2020, Jane Doe <jane@example.org>", "GPL-2+")
    assert [(p.file, p.creator, p.license) for p in load_pictures(pictures)] == [("red.png", *jane),
                                                                                 ("sky.png", *jane)]
    train, heldout = load_pool(catalog_dir, "train", pictures), load_pool(catalog_dir, "heldout", pictures)
    assert [p.file for p in train.pictures] == ["red.png"] and [p.file for p in heldout.pictures] == ["sky.png"]
    for seed in range(10):  # the first seed whose room hangs a picture
        built = gen.build_scene(seed, **TINY, pool=train, workdir=tmp_path / str(seed))
        hung = [w["picture"] for w in built.recipe["room"]["wall_sides"] if "picture" in w]
        if hung:
            break
    assert hung, "no room of seeds 0-9 hangs a picture"
    assert {"id": "picture:red.png", "file": "red.png", "creator": "2020, Jane Doe <jane@example.org>",
            "license": "GPL-2+", "source": str(pictures / "copyright"), "split": "train"} in built.recipe["assets"]
    width, height = hung[0]["size"]
    assert width / height == pytest.approx(2.0)
    centre = Vector(hung[0]["center"])
    room_centre = Vector((0.0, 0.0, centre.z))
    found, _, _, _, obj, _ = built.scene.ray_cast(bpy.context.evaluated_depsgraph_get(), room_centre,
                                                  (centre - room_centre).normalized())
    assert found and obj.name.startswith("Picture"), "the picture is hidden behind its frame or the wall"


def test_pictures_without_credit_or_from_scikit_image_are_refused(tmp_path):
    with pytest.raises(PictureError, match="credits no one for blue.png"):
        load_pictures(make_pictures(tmp_path / "a", ("red.png", "blue.png")))
    (tmp_path / "skimage").mkdir()
    with pytest.raises(PictureError, match="scikit-image's sample photos"):
        load_pictures(make_pictures(tmp_path / "skimage" / "data"))
    with pytest.raises(PictureError, match="apt-get install mate-backgrounds"):
        load_pictures(tmp_path / "empty")
