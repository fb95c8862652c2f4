"""Sweet Home 3D furniture catalogues (`.sh3f`: a ZIP of OBJ+MTL models with textures and a
PluginFurnitureCatalog.properties describing them), read without Sweet Home 3D and imported into Blender at
the catalogue's size, so the synthetic rooms hold real furniture (Debian's sweethome3d-furniture).

The properties give each model's size in cm, its elevation, an optional rotation that brings the OBJ into
Sweet Home 3D's frame (Y up, front towards +Z), its category and its creator; the catalogue's licence is
one line for all its models. Models that would not stand on a room's floor are skipped (SKIP_CATEGORIES,
doors and windows, elevated pieces, tiny or huge ones).
"""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import bpy
import numpy as np
from mathutils import Matrix

DEBIAN_DIR = Path("/usr/share/sweethome3d/furniture")
INSTALL_HINT = ("install Debian's sweethome3d-furniture (apt-get install sweethome3d-furniture, about 120 MB, puts "
                f"five catalogues in {DEBIAN_DIR}) or pass --furniture DIR holding .sh3f files; "
                "--generator-version 1 (the default) renders the primitive rooms, which need none")
PROPERTIES = "PluginFurnitureCatalog.properties"
SKIP_CATEGORIES = {"Doors and windows", "Characters", "Vehicles", "Staircases"}
SIZE_CM = (15.0, 300.0)          # smallest largest-side and largest footprint side kept
MAX_OBJ_BYTES = 6_000_000        # the few heavier models cost more import time than they add
# Sweet Home 3D's frame (x right, y up, z towards the viewer) -> Blender's (x right, y away, z up):
# the model's front then faces -Y.
SH3D_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


class CatalogError(RuntimeError):
    """No usable furniture catalogue: the message says what to install or pass."""


@dataclass(frozen=True)
class FurnitureModel:
    id: str                     # the catalogue's own id, e.g. "Blend Swap CC-0#armchair"
    name: str
    category: str
    creator: str
    catalog: str                # the catalogue's name, e.g. "Blend Swap CC-0"
    catalog_file: str           # the .sh3f file name
    catalog_version: str
    license: str
    model: str                  # the OBJ's path inside the ZIP
    size_cm: tuple[float, float, float]   # width (x), depth (y), height (z)
    rotation: tuple[float, ...]           # row-major 3x3 in Sweet Home 3D's frame
    top_cm: float               # where things put on it rest (dropOnTopElevation, else its height)

    def credit(self) -> dict:
        """What a data card records about this model."""
        return {"id": self.id, "name": self.name, "category": self.category, "creator": self.creator,
                "catalog": self.catalog, "catalog_file": self.catalog_file, "catalog_version": self.catalog_version,
                "license": self.license, "model": self.model, "size_cm": list(self.size_cm)}


_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")
_SIMPLE = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def parse_properties(text: str) -> dict[str, str]:
    """A Java .properties file (ISO-8859-1 text, `\\uXXXX` escapes, `\\` line continuations) -> dict."""
    lines, out = iter(text.splitlines()), {}
    for line in lines:
        line = line.lstrip()
        if not line or line[0] in "#!":
            continue
        while (len(line) - len(line.rstrip("\\"))) % 2 == 1:  # an odd number of backslashes continues it
            line = line[:-1] + next(lines, "").lstrip()
        match = re.match(r"((?:\\.|[^=:\s\\])*)\s*[=:\s]?\s*(.*)", line)
        key, value = (_ESCAPE.sub(lambda m: chr(int(m[1][1:], 16)) if m[1][0] == "u" and len(m[1]) == 5
                                  else _SIMPLE.get(m[1], m[1]), part) for part in match.groups())
        out[key] = value
    return out


def _entries(props: dict[str, str]) -> dict[int, dict[str, str]]:
    """key#N=value lines grouped by N."""
    entries: dict[int, dict[str, str]] = {}
    for key, value in props.items():
        name, sep, index = key.partition("#")
        if sep and index.isdigit():
            entries.setdefault(int(index), {})[name] = value
    return entries


def skip_reason(entry: dict[str, str], obj_bytes: int | None) -> str | None:
    """Why a catalogue entry is not used as floor furniture, or None when it is."""
    if entry.get("category") in SKIP_CATEGORIES:
        return f"category {entry.get('category')}"
    if entry.get("doorOrWindow") == "true" or any(k.startswith("doorOrWindow") and k != "doorOrWindow" for k in entry):
        return "door or window"
    if entry.get("staircaseCutOutShape"):
        return "staircase"
    if float(entry.get("elevation", 0.0)) > 0.0:
        return "elevated (hangs on a wall or stands on something)"
    size = [float(entry[k]) for k in ("width", "depth", "height")]
    if max(size) < SIZE_CM[0] or max(size[:2]) > SIZE_CM[1] or size[2] > SIZE_CM[1]:
        return f"size {size} cm outside {SIZE_CM}"
    if obj_bytes is None:
        return "model file missing from the catalogue"
    if obj_bytes > MAX_OBJ_BYTES:
        return f"model file of {obj_bytes} bytes (> {MAX_OBJ_BYTES})"
    return None


def read_catalog(path: Path) -> tuple[list[FurnitureModel], dict[str, str], dict[str, str]]:
    """The usable models of one .sh3f, the catalogue's own description and the skipped ids with the reason."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            props = parse_properties(archive.read(PROPERTIES).decode("latin-1"))
            sizes = {info.filename: info.file_size for info in archive.infolist()}
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise CatalogError(f"{path} is not a Sweet Home 3D furniture catalogue ({e}): {INSTALL_HINT}") from None
    catalog = {k: props.get(k, "") for k in ("id", "name", "description", "version", "license", "provider")}
    models, skipped = [], {}
    for _, entry in sorted(_entries(props).items()):
        if "id" not in entry or "model" not in entry:
            continue
        model = entry["model"].lstrip("/")
        reason = skip_reason(entry, sizes.get(model))
        if reason:
            skipped[entry["id"]] = reason
            continue
        rotation = tuple(float(v) for v in entry.get("modelRotation", "1 0 0 0 1 0 0 0 1").split())
        size = tuple(float(entry[k]) for k in ("width", "depth", "height"))
        top = float(entry.get("dropOnTopElevation", size[2]))
        models.append(FurnitureModel(
            id=entry["id"], name=entry.get("name", entry["id"]), category=entry.get("category", ""),
            creator=entry.get("creator", ""), catalog=catalog["name"] or path.stem, catalog_file=path.name,
            catalog_version=catalog["version"], license=catalog["license"], model=model,
            size_cm=size, rotation=rotation, top_cm=top if top >= 0 else 0.0))
    return models, catalog, skipped


def load_catalogs(directory: Path) -> tuple[list[FurnitureModel], list[dict]]:
    """Every usable model of every .sh3f in `directory`, sorted by id (the order seeds pick from), and one
    description per catalogue (file, name, version, licence, models used and skipped)."""
    directory = Path(directory)
    files = sorted(directory.glob("*.sh3f")) if directory.is_dir() else []
    if not files:
        raise CatalogError(f"no furniture catalogues (*.sh3f) in {directory}: {INSTALL_HINT}")
    models, catalogs = [], []
    for path in files:
        found, catalog, skipped = read_catalog(path)
        models += found
        catalogs.append({"file": path.name, **catalog, "models_used": len(found), "models_skipped": len(skipped)})
    ids = [m.id for m in models]
    if len(set(ids)) != len(ids):
        raise CatalogError(f"catalogues in {directory} repeat model ids: keep one copy of each catalogue")
    return sorted(models, key=lambda m: m.id), catalogs


def drop_missing_textures(obj) -> None:
    """Remove image nodes whose file the catalogue lacks (some MTLs name absent or absolute paths): Cycles
    would paint them magenta; the material keeps its MTL colour instead."""
    for mat in obj.data.materials:
        if mat is None or mat.node_tree is None:
            continue
        for node in [n for n in mat.node_tree.nodes if n.type == 'TEX_IMAGE']:
            if node.image is None or not os.path.isfile(bpy.path.abspath(node.image.filepath)):
                mat.node_tree.nodes.remove(node)


def import_model(model: FurnitureModel, directory: Path, workdir: Path) -> bpy.types.Object:
    """Import `model` from its catalogue in `directory` as one mesh object at the catalogue's size: its
    footprint centred on the origin, its bottom at z = 0, its front facing -Y.

    The model's folder is extracted into `workdir` (which must outlive the render: textures load from there)."""
    folder = PurePosixPath(model.model).parent
    with zipfile.ZipFile(Path(directory) / model.catalog_file) as archive:
        for name in archive.namelist():
            if PurePosixPath(name).parent == folder and not name.endswith("/"):
                archive.extract(name, workdir)
    before = set(bpy.data.objects)
    bpy.ops.wm.obj_import(filepath=str(Path(workdir) / model.model), forward_axis='Y', up_axis='Z')
    parts = [o for o in bpy.data.objects if o not in before and o.type == 'MESH']
    if not parts:
        raise CatalogError(f"{model.catalog_file}: {model.model} holds no mesh")
    obj = parts[0]
    if len(parts) > 1:
        with bpy.context.temp_override(active_object=obj, selected_editable_objects=parts):
            bpy.ops.object.join()
    obj.name = model.name
    drop_missing_textures(obj)
    rotation = SH3D_TO_BLENDER @ np.array(model.rotation).reshape(3, 3)
    obj.data.transform(obj.matrix_world)  # the importer's own transform, if any, into the mesh
    obj.matrix_world = Matrix.Identity(4)
    mesh = obj.data
    mesh.transform(Matrix(rotation.tolist()).to_4x4())
    co = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    lo, hi = co.min(axis=0), co.max(axis=0)
    scale = np.array(model.size_cm) / 100.0 / np.maximum(hi - lo, 1e-6)
    centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    mesh.vertices.foreach_set("co", ((co - centre) * scale).ravel())
    mesh.update()
    return obj
