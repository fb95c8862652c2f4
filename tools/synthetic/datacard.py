"""A data set's card: every external asset its scenes use (furniture model, HDRI) with source, creator and
licence, gathered from the scenes' own scene.json files, so the card always matches the scenes present
(resumed, extended or partly failed runs included). Written as assets.json (for programs) and
DATA_CARD.md (for people) beside the scene folders.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from wonderland_blender.atomic_write import atomic_file

CARD, ASSETS = "DATA_CARD.md", "assets.json"


def _scenes(out: Path) -> list[dict]:
    infos = []
    for path in sorted(Path(out).glob("scene_*/scene.json")):
        try:
            infos.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return infos


def collect(out: Path, catalogs: list[dict]) -> dict:
    """The contents of assets.json for the scenes in `out`: counts, catalogues and every asset used."""
    infos = _scenes(out)
    assets, uses = {}, Counter()
    for info in infos:
        for asset in info.get("assets", []):
            assets[asset["id"]] = asset
            uses[asset["id"]] += 1
    if not catalogs and (Path(out) / ASSETS).is_file():  # a version-1 run keeps the catalogues listed before
        catalogs = json.loads((Path(out) / ASSETS).read_text(encoding="utf-8")).get("catalogs", [])
    return {"generator": "tools/synthetic_scenes.py (reproduce: tools/synthetic/DATA.md)",
            "scenes": dict(sorted(Counter(i.get("split", "?") for i in infos).items())),
            "generator_versions": sorted({i.get("generator_version") for i in infos} - {None}),
            "catalogs": catalogs,
            "assets": [{**assets[k], "scenes": uses[k]} for k in sorted(assets)]}


def _row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def _table(header: tuple, rows) -> list[str]:
    """A Markdown table's lines: the header, its rule, one line per row of cells."""
    return [_row(header), _row(["---"] * len(header)), *map(_row, rows)]


def render_card(data: dict) -> str:
    furniture = [a for a in data["assets"] if not a["id"].startswith(("hdri:", "picture:"))]
    hdris = [a for a in data["assets"] if a["id"].startswith("hdri:")]
    pictures = [a for a in data["assets"] if a["id"].startswith("picture:")]
    licences = Counter(a["license"] for a in furniture)
    count = sum(data["scenes"].values())
    lines = [f"# Data card ({count} scene{'s' * (count != 1)}: "
             + ", ".join(f"{n} {split}" for split, n in data["scenes"].items()) + ")", "",
             "Rendered by `tools/synthetic_scenes.py`, generator version(s) "
             + ", ".join(map(str, data["generator_versions"])) + "; `tools/synthetic/DATA.md` says how to "
             "reproduce them from their seeds. Each scene's `scene.json` lists the assets it uses. Procedural "
             "materials and lights are made by the generator itself. scikit-image's sample photos are never "
             "used.", "",
             f"## Furniture ({len(furniture)} models)", ""]
    v1_only = data["generator_versions"] == [1]
    if furniture:
        lines += ["From Sweet Home 3D furniture catalogues (Debian's `sweethome3d-furniture`), converted to OBJ "
                  "by Emmanuel Puybaret / eTeks. Models under a Creative Commons Attribution licence are credited "
                  "below by name and creator; redistributing the rendered images requires keeping this credit.", ""]
        lines += [f"- {n} model{'s' * (n != 1)}: {lic}" for lic, n in sorted(licences.items())]
    else:  # generator version 1 uses no external asset
        lines += ["Procedural furniture only" + (" (generator version 1)." if v1_only else ".")]
    if data["catalogs"]:
        lines += ["", *_table(("catalogue file", "name", "version", "licence", "models usable", "skipped"),
                              ((c["file"], c["name"], c["version"], c["license"], c["models_used"],
                                c["models_skipped"]) for c in data["catalogs"]))]
    if furniture:
        lines += ["", *_table(("model", "id", "creator", "catalogue", "licence", "split", "scenes"),
                              ((a["name"], a["id"], a["creator"], a["catalog_file"], a["license"], a["split"],
                                a["scenes"]) for a in furniture))]
    lines += ["", f"## HDRIs ({len(hdris)})", ""]
    if hdris:
        lines += _table(("file", "source", "creator", "licence", "split", "scenes"),
                        ((a["file"], a["source"], a["creator"], a["license"], a["split"], a["scenes"]) for a in hdris))
    else:
        lines += ["None (generator version 1's uniform sky)." if v1_only else "None."]
    lines += ["", f"## Framed photographs ({len(pictures)})", ""]
    if pictures:
        lines += _table(("file", "copyright", "licence", "credits from", "split", "scenes"),
                        ((a["file"], a["creator"], a["license"], a["source"], a["split"], a["scenes"])
                         for a in pictures))
    else:
        lines += ["None (`--pictures` was not given)."]
    return "\n".join(lines) + "\n"


def write_data_card(out: Path, catalogs: list[dict]) -> dict:
    """Write out/assets.json and out/DATA_CARD.md (each replaced atomically) for the scenes in `out`."""
    data = collect(out, catalogs)
    with atomic_file(Path(out) / ASSETS) as f:
        f.write((json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    with atomic_file(Path(out) / CARD) as f:
        f.write(render_card(data).encode("utf-8"))
    return data
