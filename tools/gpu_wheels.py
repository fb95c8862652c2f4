"""Fetch the wheels a lent GPU machine lacks into .whl/ (git-ignored, sent with the device's `carry`), and say
how much would travel.

    .venv/bin/python tools/gpu_wheels.py [--burst] [--dest .whl] [--carry .whl .burst]

The GPU machine (tools/gpu_check.py, tools/gpu_burst.py) runs its own Python 3.12 with torch, accelerate,
transformers, safetensors, numpy, jaxtyping, rich and ninja already installed, and no package index. The
backend imports diffusers, peft and plyfile at module level on these paths, and gsplat renders on CUDA;
each is pure Python (gsplat compiles its kernels on first use), so --no-deps wheels for any platform do.
peft travels though the image has one: its LoRA injection must be the version we test. --burst leaves
gsplat out (tools/gpu_burst.py trains with --renderer torch), 6 MiB more for the training data. On the machine:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD

(its own torch untouched: --target installs beside it, --no-deps pulls nothing else). The device takes
at most 64 MiB in all: tracked files, untracked files git does not ignore, and the carried paths.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ("diffusers==0.42.1", "gsplat==1.5.3", "peft==0.21.2", "plyfile==1.1.3")  # pyproject.toml's pins
TRAVEL_LIMIT = 64 * 2 ** 20
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def fetch(dest: Path, wheels: tuple[str, ...]) -> list[Path]:
    """pip download `wheels` for CPython 3.12 on x86-64 Linux into `dest`, and remove any other wheel there
    (everything in it travels and is installed)."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(dest), *wheels],
                   check=True)
    names = {w.split("==")[0].replace("-", "_").lower() for w in wheels}
    for other in (p for p in dest.glob("*.whl") if p.name.split("-")[0].lower() not in names):
        other.unlink()
    return sorted(dest.glob("*.whl"))


def travelling_bytes(carry: list[Path]) -> tuple[int, int]:
    """(bytes of the working tree that travels without carry, bytes of the carried paths)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((ROOT / name.decode()).stat().st_size for name in listed if name and (ROOT / name.decode()).is_file())
    carried = sum(p.stat().st_size for path in carry for p in ([path] if path.is_file() else path.rglob("*"))
                  if p.is_file())
    return tree, carried


def size_report(carry: list[Path]) -> tuple[str, bool]:
    """A line saying what travels and whether it fits the device's limit."""
    tree, carried = travelling_bytes(carry)
    fits = tree + carried <= TRAVEL_LIMIT
    return (f"travels: working tree {tree / 2 ** 20:.1f} MiB + carried {carried / 2 ** 20:.1f} MiB "
            f"({', '.join(map(str, carry)) or 'nothing'}) = {(tree + carried) / 2 ** 20:.1f} MiB of 64 MiB"
            f"{'' if fits else ': TOO BIG, carry less'}"), fits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl")
    parser.add_argument("--burst", action="store_true", help="for tools/gpu_burst.py: without gsplat")
    parser.add_argument("--carry", type=Path, nargs="*", help="every path the device call will carry "
                        "(default: --dest), to check the total")
    args = parser.parse_args(argv)
    wheels = fetch(args.dest, tuple(w for w in WHEELS if not (args.burst and w.startswith("gsplat"))))
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2 ** 20:6.2f} MiB  {wheel.name}")
    line, fits = size_report(args.carry if args.carry is not None else [args.dest])
    print(line)
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
