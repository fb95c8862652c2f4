"""`info`: what a Gaussian PLY holds (count, SH degree, extent, scales, opacities)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ply", help="a standard 3DGS PLY")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def summarize(path: str | Path) -> dict:
    import torch

    from backend.ply import read_ply

    g, report = read_ply(path)
    summary = {"file": str(path), "bytes": Path(path).stat().st_size, "format": report.format,
               "count": report.count, "dropped_nonfinite": report.dropped_nonfinite,
               "sh_degree": report.sh_degree, "ignored_elements": list(report.ignored_elements),
               "warnings": list(report.warnings)}
    if len(g):
        q = torch.tensor([0.05, 0.5, 0.95])
        lo, hi = g.means.min(0).values, g.means.max(0).values
        summary.update({
            "bbox_min": lo.tolist(), "bbox_max": hi.tolist(),
            "center": g.means.mean(0).tolist(),
            "scale_quantiles_5_50_95": torch.quantile(g.scales.max(1).values.float(), q).tolist(),
            "opacity_quantiles_5_50_95": torch.quantile(g.opacities.float(), q).tolist(),
        })
    return summary


def run(args) -> int:
    summary = summarize(args.ply)
    if args.json:
        print(json.dumps(summary))
        return 0
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, list) and value and isinstance(value[0], float):
            value = "  ".join(f"{v:.4g}" for v in value)
        print(f"{key:<{width}}  {value}")
    return 0
