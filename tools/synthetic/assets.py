"""The assets a version-2 scene draws from (furniture models, HDRIs), which split each belongs to, and what
the data card says about each.

Every asset belongs to exactly one asset split, decided by a hash of its id alone (not by the other assets
present), so adding a catalogue never moves an existing asset between splits: the held-out split's
furniture and HDRIs never appear in a training (or the old test split's) scene.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from .catalog import FurnitureModel, load_catalogs
from .pictures import Picture, load_pictures

# Share of each kind of asset held out, by hash. The 12 Debian photographs need a larger share than the
# hundreds of models for any to be held out (0.2 holds out 2 of them, 0.15 none); 0.15 holds out 2 HDRIs of 8.
HELDOUT_SHARE = {"furniture": 0.15, "hdri": 0.15, "picture": 0.2}
HELDOUT_SALT = "wonderland-heldout:"
HDRI_DIR = "studiolights/world"  # inside Blender's datafiles
HDRI_CREDIT = {"creator": "Greg Zaal (Poly Haven), 1K versions shipped with Blender", "license": "CC0",
               "catalog": "Blender datafiles/studiolights/world (license.txt there)"}
HDRI_ORIGINALS = {  # from Blender's license.txt beside the files
    "city.exr": "https://polyhaven.com/a/portland_landing_pad", "courtyard.exr": "https://polyhaven.com/a/courtyard",
    "forest.exr": "https://polyhaven.com/a/ninomaru_teien", "interior.exr": "https://polyhaven.com/a/hotel_room",
    "night.exr": "https://polyhaven.com/a/moonless_golf (probably)",
    "studio.exr": "https://polyhaven.com/a/studio_small_01 (probably)",
    "sunrise.exr": "https://polyhaven.com/a/spruit_sunrise", "sunset.exr": "https://polyhaven.com/a/venice_sunset"}


def asset_split(asset_id: str) -> str:
    """'heldout' for about HELDOUT_SHARE of the asset ids of a kind ("kind:name", by hash), 'train' for the
    rest."""
    h = int(hashlib.sha256((HELDOUT_SALT + asset_id).encode("utf-8")).hexdigest()[:8], 16) / 2 ** 32
    return "heldout" if h < HELDOUT_SHARE[asset_id.split(":", 1)[0]] else "train"


def scene_asset_split(split: str) -> str:
    """The asset split a scene split draws from: the held-out scenes from the held-out assets, the training
    and the old test split from the training assets."""
    return "heldout" if split == "heldout" else "train"


@dataclass(frozen=True)
class Hdri:
    file: str
    path: Path

    @property
    def id(self) -> str:
        return "hdri:" + self.file

    def credit(self) -> dict:
        return {"id": self.id, "file": self.file, "source": HDRI_ORIGINALS.get(self.file, ""), **HDRI_CREDIT}


def blender_hdris() -> list[Hdri]:
    """The CC0 HDRIs that ship inside Blender (bpy's datafiles), sorted by file name."""
    directory = Path(bpy.utils.system_resource('DATAFILES', path=HDRI_DIR))
    return [Hdri(p.name, p) for p in sorted(directory.glob("*.exr"))]


@dataclass
class AssetPool:
    """The assets of one asset split, in a fixed order (seeds pick from these lists)."""
    split: str
    furniture: list[FurnitureModel]
    hdris: list[Hdri]
    furniture_dir: Path
    catalogs: list[dict]
    pictures: list[Picture] = field(default_factory=list)


def load_pool(furniture_dir: Path, split: str, pictures_dir: Path | None = None) -> AssetPool:
    """The furniture of `furniture_dir`'s catalogues, Blender's HDRIs and the photographs of `pictures_dir`
    (none without it) that scenes of `split` may use."""
    models, catalogs = load_catalogs(furniture_dir)
    pictures = load_pictures(pictures_dir) if pictures_dir is not None else []
    wanted = scene_asset_split(split)
    pool = AssetPool(wanted, [m for m in models if asset_split("furniture:" + m.id) == wanted],
                     [h for h in blender_hdris() if asset_split(h.id) == wanted], Path(furniture_dir), catalogs,
                     [p for p in pictures if asset_split(p.id) == wanted])
    if not pool.furniture or not pool.hdris:
        raise ValueError(f"the {wanted} asset split of {furniture_dir} holds {len(pool.furniture)} furniture "
                         f"models and {len(pool.hdris)} HDRIs: it needs at least one of each (add catalogues)")
    return pool
