"""Loss curves of training runs as one PNG per run, for the model card.

Reads RUN_DIR/metrics.jsonl (written by the training engine: one JSON object per logged step, with
"val/..." keys on validation steps) and plots the training loss, each loss term and the validation
metrics against the step. Needs matplotlib (`pip install -e .[plots]`); training itself does not.

    .venv/bin/python tools/plot_curves.py runs/vae runs/video runs/lrm --out backend/weights/default/curves
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

SKIPPED = {"step", "lr", "grad_norm", "step_time_s"}


def read_metrics(run: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[tuple[int, float]]]]:
    """(training series, validation series), each {name: [(step, value), ...]}; a resumed run's
    repeated steps keep their latest value."""
    train: dict[str, dict[int, float]] = {}
    val: dict[str, dict[int, float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "step" not in row:
            continue  # the run's closing summary
        for key, value in row.items():
            if key in SKIPPED or not isinstance(value, (int, float)):
                continue
            series = val if key.startswith("val/") else train
            series.setdefault(key.removeprefix("val/"), {})[row["step"]] = float(value)
    return ({k: sorted(v.items()) for k, v in train.items()}, {k: sorted(v.items()) for k, v in val.items()})


def plot_run(run: Path, out: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = read_metrics(run)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, points in train.items():
        steps, values = zip(*points)
        axes[0].plot(steps, values, label=name, linewidth=1)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training losses (log scale)")
    axes[0].legend(fontsize=7)
    # PSNR (dB) on the left axis and the other metrics on a right one; without PSNR all on the left
    right = axes[1].twinx() if "psnr" in val and len(val) > 1 else axes[1]
    for i, (name, points) in enumerate(val.items()):
        steps, values = zip(*points)
        axis = axes[1] if name == "psnr" else right
        axis.plot(steps, values, marker="o", color=f"C{i}", label=name)
    axes[1].set_ylabel("PSNR (dB)" if "psnr" in val else "validation loss")
    axes[1].set_xlabel("step")
    axes[1].set_title("validation (scenes held out of training)")
    handles = [h for axis in dict.fromkeys((axes[1], right)) for h in axis.get_legend_handles_labels()[0]]
    if handles:
        axes[1].legend(handles=handles, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (train-* --out)")
    p.add_argument("--out", type=Path, required=True, help="folder for RUN_NAME.png")
    args = p.parse_args(argv)
    for run in args.runs:
        print(plot_run(run, args.out / f"{run.name}.png", run.name))


if __name__ == "__main__":
    main()
