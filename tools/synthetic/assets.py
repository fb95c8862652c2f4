"""The assets a version-2 scene draws from (furniture models, HDRIs), which split each belongs to, and what
the data card says about each.

Every asset belongs to exactly one asset split, decided by a hash of its id alone (not by the other assets
present), so adding a catalogue never moves an existing asset between splits: the held-out split's
furniture and HDRIs never appear in a training (or the old test split's) scene.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import bpy

from .catalog import FurnitureModel, load_catalogs

HELDOUT_SHARE = 0.15          # of the assets, by hash
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
    """'heldout' for about HELDOUT_SHARE of asset ids (by hash), 'train' for the rest."""
    h = int(hashlib.sha256((HELDOUT_SALT + asset_id).encode("utf-8")).hexdigest()[:8], 16) / 2 ** 32
    return "heldout" if h < HELDOUT_SHARE else "train"


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


def load_pool(furniture_dir: Path, split: str) -> AssetPool:
    """The furniture of `furniture_dir`'s catalogues and Blender's HDRIs that scenes of `split` may use."""
    models, catalogs = load_catalogs(furniture_dir)
    wanted = scene_asset_split(split)
    pool = AssetPool(wanted, [m for m in models if asset_split("furniture:" + m.id) == wanted],
                     [h for h in blender_hdris() if asset_split(h.id) == wanted], Path(furniture_dir), catalogs)
    if not pool.furniture or not pool.hdris:
        raise ValueError(f"the {wanted} asset split of {furniture_dir} holds {len(pool.furniture)} furniture "
                         f"models and {len(pool.hdris)} HDRIs: it needs at least one of each (add catalogues)")
    return pool
