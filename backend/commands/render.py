"""`render`: one PNG per camera of a cameras.json, DIR/0000.png, DIR/0001.png, …"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from backend.devices import DEVICES, pick_device
from backend.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ply", required=True, help="a standard 3DGS PLY (ours, gsplat, 3DGS, SuperSplat, …)")
    p.add_argument("--cameras", required=True, help="cameras.json (see shared/design/cameras.md)")
    p.add_argument("--out", required=True, help="output folder for the PNGs")
    p.add_argument("--width", type=int, help="output width (default: the cameras' width)")
    p.add_argument("--height", type=int, help="output height (default: the cameras' height)")
    p.add_argument("--background", default="0,0,0", help="R,G,B in 0..1 behind the Gaussians (default 0,0,0)")
    p.add_argument("--rgba", action="store_true", help="write RGBA PNGs with straight alpha instead")
    p.add_argument("--device", choices=DEVICES, default="auto")


def parse_background(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise InputError(f"--background {text!r} is not three numbers in 0..1", "write it as R,G,B, e.g. 1,1,1")
    return values


MAX_SIDE = 16384
MAX_PIXELS = 8192 * 8192  # an RGBA float frame of this size alone takes 1 GiB


def output_size(args, cameras) -> tuple[int, int]:
    width, height = args.width or cameras.width, args.height or cameras.height
    if width <= 0 or height <= 0:
        raise InputError(f"output size {width}x{height} is not positive", "give --width and --height above 0")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise InputError(f"output size {width}x{height} is too large to render (at most {MAX_SIDE} a side "
                         f"and {MAX_PIXELS // 10**6} megapixels)", "give a smaller --width and --height")
    return width, height


def run(args) -> int:
    from backend.cameras import load_cameras
    from backend.images import save_png
    from backend.ply import read_ply
    from backend.render import render

    background = parse_background(args.background)
    cameras = load_cameras(args.cameras)
    width, height = output_size(args, cameras)
    gaussians, report = read_ply(args.ply)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    device = pick_device(args.device)
    gaussians, cameras = gaussians.to(device), cameras.to(device)
    bg = torch.zeros(3) if args.rgba else torch.tensor(background)
    out = Path(args.out)
    with torch.no_grad():
        for i in tqdm(range(len(cameras)), desc="render", unit="view"):
            result = render(gaussians, cameras[i], width, height, background=bg.to(device))
            rgb, alpha = result.rgb[0], result.alpha[0]
            if args.rgba:
                rgb = rgb / alpha.clamp_min(1e-6)
                save_png(out / f"{i:04d}.png", rgb, alpha)
            else:
                save_png(out / f"{i:04d}.png", rgb)
    print(f"wrote {len(cameras)} images of {width}x{height} from {report.count} Gaussians to {out}")
    return 0
