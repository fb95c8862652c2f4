"""Build the Blender extension zip: dist/wonderland_blender-<version>.zip (run by `python3 build.py zip`).

Layout: blender_manifest.toml and the add-on's files at the zip root (what Blender's validator and
installer expect), and the backend source under backend_src/ (backend/, pyproject.toml, README.md) so
the add-on can pip-install its backend later. No __pycache__ or .pyc files.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADDON_DIR = "wonderland_blender"
MANIFEST = "blender_manifest.toml"
BACKEND_SRC = "backend_src"
BACKEND_FILES = ("pyproject.toml", "README.md")
SKIPPED_DIRS = {"__pycache__"}
SKIPPED_SUFFIXES = (".pyc", ".pyo")


def _tree(folder: Path):
    """Files under folder, sorted, without caches."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if not name.endswith(SKIPPED_SUFFIXES):
                yield Path(dirpath) / name


def zip_entries(root: Path) -> list[tuple[Path, str]]:
    """(source file, name in the zip) for everything the extension ships."""
    entries = [(root / MANIFEST, MANIFEST)]
    entries += [(p, p.relative_to(root / ADDON_DIR).as_posix()) for p in _tree(root / ADDON_DIR)]
    entries += [(p, f"{BACKEND_SRC}/{p.relative_to(root).as_posix()}") for p in _tree(root / "backend")]
    for name in BACKEND_FILES:
        if (root / name).is_file():
            entries.append((root / name, f"{BACKEND_SRC}/{name}"))
        else:
            print(f"[build_zip] warning: {name} is missing, so backend_src/ cannot be pip-installed",
                  file=sys.stderr)
    return entries


def build_zip(root: Path = ROOT, out_dir: Path | None = None) -> Path:
    """Write the zip atomically and return its path."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise SystemExit(f"error: {manifest} is missing: the extension needs its manifest at the repository root")
    version = tomllib.loads(manifest.read_text(encoding="utf-8"))["version"]
    out_dir = Path(out_dir) if out_dir is not None else root / "dist"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{ADDON_DIR}-{version}.zip"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=out_dir)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for source, name in zip_entries(root):
                zf.write(source, name)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a release file is readable by all
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    print(build_zip(ROOT, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
