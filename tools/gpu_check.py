"""One command for a lent GPU machine: measure, within a time budget, everything only a GPU can, into one file.

    python3 tools/gpu_check.py --out gpu_results.json [--budget 540] [--steps 10] [--rows NAME ...]
        [--row-budget NAME=SECONDS ...]
    python3 tools/gpu_check.py --dry-run --out /tmp/gpu_results.json   # tiny shapes on the CPU: the plumbing

Rows, in this order (each measured by the benchmark scripts' own functions, so the numbers are theirs):
- environment: GPU, torch, CUDA, nvcc / ninja, package versions;
- models: `bench_models.py` at the paper shape in bf16, random weights made on the GPU: one step of stock
  CogVideoX vs ours (ControlNet on / off), a --steps generation of the stock I2V pipeline vs our stack
  (ControlNet 40% + CFG 20% + PAB), the LaLRM forward at 13x60x90 latents;
- gsplat_build: nvcc and ninja looked up and recorded, then gsplat's CUDA kernels compiled (the first
  use of gsplat from PyPI compiles them: minutes), alone in its row so that it cannot eat the others;
- training: `bench_training.py`'s paper LaLRM low-resolution step, checkpointing off and on (its
  supervision renders use gsplat);
- generate_offload: a whole `generate` with `offload` at the paper shape (its previews use gsplat);
- gsplat_parity: our torch rasterizer vs gsplat on CUDA, images and gradients, SH degree 0 and 3;
- render_bench: `bench_render.py`'s scene on CUDA, ours vs gsplat as a ratio.

The steps are cut from 50 to --steps (10): the levers act on fractions of the steps (ControlNet in the
first 40% = 4 of 10 as 20 of 50; guidance in the first 20% = 2 of 10 as 10 of 50; PAB skips attention in
timesteps 100-800 = 7 of 10 steps as 35 of 50), so the stock / ours ratio of 10 steps is that of 50.

Each row runs in a child process with its own budget (killed at it, its whole process group with it)
and a share of the overall --budget (rows that find too little of it left are skipped with a reason);
a row whose needs (gsplat_build) failed is skipped. Every measurement is written to --out as soon as
the child reports it: the file is rewritten atomically each time, so a kill at any moment leaves a
valid JSON file with every row measured so far. Children die with this process (tools/budgeted.py).

--dry-run runs every row at the tiny shape on the CPU (gsplat's place taken by the torch rasterizer,
labelled so) to test the plumbing; see tests/test_gpu_check.py.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks", ROOT / "tools"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from backend.atomic import atomic_write_text  # noqa: E402  (backend/__init__.py imports nothing heavy)
from budgeted import child_env, run_budgeted  # noqa: E402

REPORT = "@@gpu_check "  # a child's stdout lines that carry a measurement (JSON after the prefix)
PACKAGES = ("torch", "diffusers", "gsplat", "peft", "transformers", "accelerate", "safetensors", "numpy", "plyfile")
MIN_ROW_S = 5  # a row is not started with less of the overall budget left


@dataclass(frozen=True)
class Row:
    name: str
    budget_s: float
    run: Callable
    needs: tuple[str, ...] = ()


def child_context(dry_run: bool, steps: int) -> SimpleNamespace:
    import torch
    cuda = torch.cuda.is_available() and not dry_run
    return SimpleNamespace(dry_run=dry_run, steps=steps, device=torch.device("cuda" if cuda else "cpu"),
                           gsplat="torch" if dry_run else "gsplat", stand_in="torch rasterizer (dry run)"
                           if dry_run else None)


def emit(**measurement) -> None:
    print(REPORT + json.dumps(measurement, default=str), flush=True)


def row_environment(ctx) -> None:
    import importlib.metadata
    import shutil

    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2 ** 30, 1), multiprocessors=props.multi_processor_count)
    emit(**info)
    tools = {}
    for tool, flag in (("nvcc", "--version"), ("ninja", "--version"), ("nvidia-smi", "-L")):
        path = shutil.which(tool)
        out = subprocess.run([path, flag], capture_output=True, text=True).stdout.strip() if path else ""
        tools[tool] = {"path": path, "version": out.splitlines()[-1] if out else None}
    emit(tools=tools)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    emit(packages=versions)


def paper_or_tiny(ctx):
    import torch

    from backend.models.config import NAMED_CONFIGS
    return NAMED_CONFIGS["tiny" if ctx.dry_run else "paper"](), torch.float32 if ctx.dry_run else torch.bfloat16


def row_models(ctx) -> None:
    import bench_models
    torch = bench_models.torch
    config, dtype = paper_or_tiny(ctx)
    torch.manual_seed(0)
    args = SimpleNamespace(steps=ctx.steps, repeats=1, compile=None)
    stack = [bench_models.LEVERS[-1]]  # ControlNet 40% + CFG 20% + PAB
    for what, seconds, vs_stock in bench_models.timed_rows(config, args, ctx.device, dtype, levers=stack,
                                                           whole_generate=False):
        emit(what=what, seconds=seconds, speedup_vs_stock=vs_stock, dtype=str(dtype), steps=ctx.steps)


def row_gsplat_build(ctx) -> None:
    import shutil

    tools = {tool: shutil.which(tool) for tool in ("nvcc", "ninja")}
    emit(tools=tools, cuda_home=os.environ.get("CUDA_HOME"), max_jobs=os.environ.get("MAX_JOBS"))
    if ctx.dry_run:
        emit(built=False, note="dry run: no CUDA; later rows use the torch rasterizer in gsplat's place")
        return
    import torch
    if not torch.cuda.is_available():  # gsplat would still compile where nvcc is, for nothing
        raise RuntimeError("gsplat's kernels are built only on a CUDA machine: no CUDA device here")
    missing = [tool for tool, path in tools.items() if path is None]
    if missing:
        raise RuntimeError(f"gsplat cannot compile its CUDA kernels: {' and '.join(missing)} not on PATH")
    start = time.perf_counter()
    from gsplat.cuda import _backend  # the import compiles (or loads the earlier build)
    if _backend._C is None:
        raise RuntimeError("gsplat imported but its CUDA extension did not build (see the log tail)")
    emit(built=True, seconds=time.perf_counter() - start)


def row_training(ctx) -> None:
    import bench_training
    torch = bench_training.torch
    from backend.models.lalrm import LaLRMConfig
    config = bench_training.ModelConfig.tiny().lalrm if ctx.dry_run else LaLRMConfig.paper_low_res()
    views, size = (2, (16, 24)) if ctx.dry_run else (8, (config.height, config.width))
    for checkpointing in (False, True):
        row = dict(config="tiny" if ctx.dry_run else "paper_low_res", views=views, render=f"{size[0]}x{size[1]}",
                   bf16=not ctx.dry_run, gradient_checkpointing=checkpointing)
        try:
            seconds, peak = bench_training.bench(config, ctx.device, 1 if ctx.dry_run else 3, views, size,
                                                 bf16=not ctx.dry_run, checkpointing=checkpointing)
            emit(**row, seconds_per_step=seconds, peak_gb=peak)
        except torch.OutOfMemoryError:
            emit(**row, out_of_memory=True)
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


def row_generate_offload(ctx) -> None:
    import bench_models
    config, dtype = paper_or_tiny(ctx)
    bench_models.torch.manual_seed(0)
    models = bench_models.build_models(config, ctx.device, dtype, stock=False)
    prompt = bench_models.bench_inputs(config, ctx.device, dtype).text[1]
    what, seconds, _ = bench_models.generate_row(config, SimpleNamespace(steps=ctx.steps, compile=None), ctx.device,
                                                 models, prompt)
    emit(what=what, seconds=seconds, dtype=str(dtype), steps=ctx.steps)


def row_gsplat_parity(ctx) -> None:
    """Images, alpha, depth and the gradients of a fixed random image loss, ours vs gsplat, same scene."""
    import bench_render
    torch = bench_render.torch
    from backend.gaussians import Gaussians
    from backend.render import render
    count, size = (2_000, 48) if ctx.dry_run else (50_000, 256)
    for sh_degree in (0, 3):
        base, cameras = bench_render.scene(count, size)
        gen = torch.Generator().manual_seed(1)
        rest = 0.3 * torch.randn(count, (sh_degree + 1) ** 2 - 1, 3, generator=gen)
        leaves = {k: getattr(base, k).to(ctx.device).requires_grad_() for k in
                  ("means", "log_scales", "quats", "opacity_logits", "sh0")}
        leaves["sh_rest"] = rest.to(ctx.device).requires_grad_()
        weights = torch.rand(1, size, size, 3, generator=gen).to(ctx.device)
        cameras = cameras.to(ctx.device)
        outputs, grads = {}, {}
        for backend in ("torch", ctx.gsplat):
            out = render(Gaussians(**leaves), cameras, background=(0.2, 0.3, 0.4), backend=backend)
            loss = (out.rgb * weights).sum() + out.alpha.sum()
            grads[backend] = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
            outputs[backend] = out
        ours, theirs = outputs["torch"], outputs[ctx.gsplat]
        seen = theirs.alpha > 0.5
        mse = torch.mean((ours.rgb.clamp(0, 1) - theirs.rgb.clamp(0, 1)) ** 2)
        rel = {name: float((a - b).norm() / b.norm().clamp_min(1e-12)) if a is not None and b is not None else None
               for name, a, b in zip(leaves, grads["torch"], grads[ctx.gsplat])}  # None: unused (degree 0)
        emit(sh_degree=sh_degree, gaussians=count, size=size, vs=ctx.stand_in or "gsplat",
             psnr_db=float(10 * torch.log10(1 / mse.clamp_min(1e-20))),
             alpha_max_abs=float((ours.alpha - theirs.alpha).abs().max()),
             depth_p99_abs_seen=float((ours.depth - theirs.depth)[seen].abs().quantile(0.99)) if seen.any() else None,
             grad_relative_l2=rel)


def row_render_bench(ctx) -> None:
    """bench_render.py's scene, seconds per frame (median after a warm-up, synchronized): ours vs gsplat."""
    import bench_render
    from bench_models import timed
    torch = bench_render.torch
    from backend.render import render
    counts, size, repeat = ([3_000], 64, 1) if ctx.dry_run else ([100_000, 1_000_000], 512, 5)
    for count in counts:
        gaussians, cameras = bench_render.scene(count, size)
        gaussians, cameras = gaussians.to(ctx.device), cameras.to(ctx.device)
        with torch.no_grad():
            ours, theirs = (timed(lambda: render(gaussians, cameras, backend=backend), ctx.device, repeat)
                            for backend in ("torch", ctx.gsplat))
        emit(gaussians=count, size=f"{size}x{size}", torch_s=ours, gsplat_s=theirs, vs=ctx.stand_in or "gsplat",
             torch_over_gsplat=ours / theirs)


ROWS = (Row("environment", 40, row_environment),
        Row("models", 200, row_models),
        Row("gsplat_build", 240, row_gsplat_build),
        Row("training", 80, row_training, needs=("gsplat_build",)),
        Row("generate_offload", 100, row_generate_offload, needs=("gsplat_build",)),
        Row("gsplat_parity", 30, row_gsplat_parity, needs=("gsplat_build",)),
        Row("render_bench", 40, row_render_bench, needs=("gsplat_build",)))
BY_NAME = {row.name: row for row in ROWS}


class Results:
    """The results file, rewritten atomically after every change."""

    def __init__(self, path: Path, args) -> None:
        self.path = path
        self.data = {"tool": "tools/gpu_check.py", "dry_run": args.dry_run, "budget_s": args.budget,
                     "steps": args.steps, "host": platform.node(),
                     "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     "finished": None, "rows": []}
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")


def run_row(row: Row, budget: float, args, results: Results) -> dict:
    """Run one row in a child process for at most `budget` seconds, recording each measurement as it comes."""
    entry = {"name": row.name, "budget_s": round(budget, 1), "status": "running", "seconds": None,
             "measurements": [], "log_tail": ""}
    results.data["rows"].append(entry)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", row.name, "--steps", str(args.steps)]
    if args.dry_run:
        command.append("--dry-run")
    start = time.monotonic()

    def started(pid: int) -> None:
        entry["pid"] = pid
        results.save()

    def measured(line: str) -> bool:
        if not line.startswith(REPORT):
            return False
        entry["measurements"].append(json.loads(line[len(REPORT):]))
        entry["seconds"] = round(time.monotonic() - start, 2)
        results.save()
        return True

    env = child_env()
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 4))  # gsplat's compile: ninja's parallel jobs
    outcome = run_budgeted(command, budget, ROOT, measured, started, env)
    entry.update(status=outcome.status, seconds=outcome.seconds, log_tail=outcome.log_tail)
    if outcome.status == "failed":
        entry["returncode"] = outcome.returncode
    results.save()
    return entry


def parse_budgets(items: list[str], parser: argparse.ArgumentParser) -> dict[str, float]:
    budgets = {}
    for item in items:
        name, _, seconds = item.partition("=")
        try:
            budgets[name] = float(seconds)
        except ValueError:
            parser.error(f"--row-budget {item!r}: write NAME=SECONDS, e.g. models=240")
        if name not in BY_NAME:
            parser.error(f"--row-budget {item!r}: no row {name!r}; rows: {', '.join(BY_NAME)}")
    return budgets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, help="results JSON file (rewritten atomically after every measurement)")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: test the plumbing")
    parser.add_argument("--budget", type=float, default=540, help="seconds for all rows together (default 540)")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps of the generation rows (default 10)")
    parser.add_argument("--rows", nargs="+", choices=list(BY_NAME), help="run only these rows (in the usual order)")
    parser.add_argument("--row-budget", nargs="+", default=[], metavar="NAME=SECONDS", help="override a row's budget")
    parser.add_argument("--child", choices=list(BY_NAME), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # inside a row's own process
        BY_NAME[args.child].run(child_context(args.dry_run, args.steps))
        return 0
    if args.out is None:
        parser.error("--out FILE is required: the results file, e.g. --out $OUT/gpu_results.json")
    budgets = parse_budgets(args.row_budget, parser)
    results = Results(args.out, args)
    deadline = time.monotonic() + args.budget
    status: dict[str, str] = {}
    for row in ROWS:
        if args.rows and row.name not in args.rows:
            continue
        left = deadline - time.monotonic()
        failed = [need for need in row.needs if status.get(need, "ok") != "ok"]
        if failed or left < MIN_ROW_S:
            reason = (f"needs {', '.join(failed)}, which did not finish ok" if failed
                      else f"only {max(left, 0):.0f} s of the --budget {args.budget:.0f} s left")
            results.data["rows"].append({"name": row.name, "status": "skipped", "reason": reason})
            results.save()
            status[row.name] = "skipped"
        else:
            entry = run_row(row, min(budgets.get(row.name, row.budget_s), left), args, results)
            status[row.name] = entry["status"]
        print(f"{row.name:>16}: {status[row.name]}", flush=True)
        for measurement in (results.data["rows"][-1].get("measurements") or []):  # the device returns the tail
            print(f"{'':>18}{json.dumps(measurement, default=str)}", flush=True)
    results.data["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results.save()
    print(f"results: {args.out}")
    return 0 if all(s == "ok" for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
