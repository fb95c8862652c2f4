"""Photographs hung on version-2 room walls as framed pictures (opt-in: --pictures DIR), credited from a
Debian machine-readable copyright file (DEP-5) beside them or in their Debian package's documentation.

Debian's mate-backgrounds holds 12 nature photographs (nature/, GPL-2+); its other folders are
illustrations. Pictures without a credit are refused, and so are scikit-image's bundled sample photos
(common test pictures that must stay out of training).
"""
from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass
from pathlib import Path

import bpy

MATE_NATURE = Path("/usr/share/backgrounds/mate/nature")
KNOWN_COPYRIGHT = {MATE_NATURE: Path("/usr/share/doc/mate-backgrounds/copyright")}
SUFFIXES = (".jpg", ".jpeg", ".png")


class PictureError(ValueError):
    """Unusable --pictures folder: the message says why and what to do."""


@dataclass(frozen=True)
class Picture:
    file: str
    path: Path
    creator: str
    license: str
    source: str

    @property
    def id(self) -> str:
        return "picture:" + self.file

    def credit(self) -> dict:
        return {"id": self.id, "file": self.file, "creator": self.creator, "license": self.license,
                "source": self.source}


def parse_dep5(text: str) -> list[tuple[list[str], str, str]]:
    """(file patterns, copyright, licence name) of each Files paragraph of a DEP-5 copyright file."""
    paragraphs = []
    for block in text.split("\n\n"):
        fields, key = {}, None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if "Files" in fields and "Copyright" in fields:
            copyright_ = "; ".join(c.strip() for c in fields["Copyright"].splitlines() if c.strip())
            licence = fields.get("License", "").splitlines()[0] if fields.get("License") else ""
            paragraphs.append((fields["Files"].split(), copyright_, licence))
    return paragraphs


def load_pictures(directory: Path) -> list[Picture]:
    """The credited photographs in `directory`, sorted by file name."""
    directory = Path(directory)
    if "skimage" in directory.resolve().parts:
        raise PictureError(f"{directory} holds scikit-image's sample photos, common test pictures: keep them out "
                           "of training (pass another --pictures folder)")
    files = sorted(p for p in directory.glob("*") if p.suffix.lower() in SUFFIXES) if directory.is_dir() else []
    if not files:
        raise PictureError(f"no .jpg or .png pictures in {directory}: for Debian's nature photographs run "
                           f"apt-get install mate-backgrounds and pass --pictures {MATE_NATURE}")
    copyright_file = directory / "copyright"
    if not copyright_file.is_file():
        copyright_file = KNOWN_COPYRIGHT.get(directory.resolve(), copyright_file)
    if not copyright_file.is_file():
        raise PictureError(f"no copyright file for the pictures in {directory}: put a Debian-format (DEP-5) "
                           f"'copyright' file there naming each picture's creator and licence")
    paragraphs = parse_dep5(copyright_file.read_text(encoding="utf-8", errors="replace"))
    pictures, uncredited = [], []
    for path in files:
        match = next(((c, lic) for patterns, c, lic in paragraphs
                      if any(fnmatch.fnmatch(path.name, p.rsplit("/", 1)[-1]) for p in patterns if p != "*")), None)
        if match is None:
            uncredited.append(path.name)
            continue
        pictures.append(Picture(path.name, path, match[0], match[1], str(copyright_file)))
    if uncredited:
        raise PictureError(f"{copyright_file} credits no one for {', '.join(uncredited)}: add them to it or "
                           "remove them from the folder")
    return pictures


def hang_picture(rng: random.Random, picture: Picture, wall_a, wall_b, span: tuple[float, float],
                 height: float) -> dict:
    """A framed `picture` on the wall from floor point wall_a to wall_b (seen from the room's side, on the
    left of a → b), within `span` (metres along the wall), its centre 1.3-1.7 m up."""
    image = bpy.data.images.load(str(picture.path), check_existing=True)
    aspect = image.size[0] / max(image.size[1], 1)
    width = min(rng.uniform(0.4, 1.2), span[1] - span[0] - 0.1)
    h = min(width / aspect, height - 0.6)
    width = h * aspect
    u = rng.uniform(span[0] + width / 2, span[1] - width / 2)
    z = min(rng.uniform(1.3, 1.7), height - 0.2 - h / 2)
    (ax, ay), (bx, by) = wall_a, wall_b
    length = ((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5
    dx, dy = (bx - ax) / length, (by - ay) / length
    nx, ny = -dy, dx                       # the wall's normal into the room
    cx, cy = ax + dx * u + nx * 0.025, ay + dy * u + ny * 0.025   # in front of its frame
    corners = [(cx + dx * s * width / 2, cy + dy * s * width / 2, z + t * h / 2)
               for s, t in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    mesh = bpy.data.meshes.new("Picture")
    mesh.from_pydata(corners, [], [(0, 1, 2, 3)])
    mesh.uv_layers.new().data.foreach_set("uv", [0, 0, 1, 0, 1, 1, 0, 1])
    mat = bpy.data.materials.new("Picture")
    nodes = mat.node_tree.nodes
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    mat.node_tree.links.new(tex.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
    nodes["Principled BSDF"].inputs["Roughness"].default_value = 0.4
    mesh.materials.append(mat)
    obj = bpy.data.objects.new("Picture", mesh)
    bpy.context.scene.collection.objects.link(obj)
    border = max(0.02, 0.05 * width)       # the frame: 2 cm deep, on the wall, `border` wider all round
    frame_mat = bpy.data.materials.new("Frame")
    shade = rng.choice(((0.02, 0.02, 0.02), (0.8, 0.8, 0.78), (0.35, 0.2, 0.1), (0.6, 0.5, 0.3)))
    frame_mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*shade, 1.0)
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(cx - nx * 0.015, cy - ny * 0.015, z))
    frame = bpy.context.object
    frame.scale = (abs(dx) * (width + 2 * border) + abs(nx) * 0.02,
                   abs(dy) * (width + 2 * border) + abs(ny) * 0.02, h + 2 * border)
    frame.data.materials.append(frame_mat)
    return {"picture": picture.id, "center": [round(cx, 4), round(cy, 4), round(z, 4)],
            "size": [round(width, 4), round(h, 4)]}
