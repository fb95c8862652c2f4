"""The training engine every trainer shares: Hugging Face accelerate, AdamW, cosine lr, EMA, checkpoints.

One code path for one GPU, several GPUs, several nodes (DDP or FSDP) and CPU: launch with
`accelerate launch [--multi_gpu --num_processes N] -m backend train-…` or `torchrun --nproc_per_node N`;
accelerate reads the launcher's environment. (`accelerate launch --cpu --num_processes 2` alone starts ONE
process; on CPU use `--multi_gpu --num_processes 2`, which gives two gloo processes.) There is no
distribution code here beyond accelerate's and torch.distributed.checkpoint's.

API (a trainer writes a step function and calls fit):

    config = TrainConfig(output_dir="runs/x", max_steps=1000, lr=4e-4, batch_size=2, stages=[...])
    trainer = Trainer(config, model_or_factory)        # a factory is called after seeding (same on all ranks)
    trainer.resume()                                    # optional: continue from output_dir's latest checkpoint
    trainer.fit(train_data, step_fn, collate_fn=..., validate_fn=...)
    state = trainer.full_state_dict(ema=True)          # all ranks call it; weights for export

- `train_data`: a map-style Dataset, or `f(stage_index, stage) -> Dataset` for progressive stages.
- `step_fn(model, batch, stage) -> {"loss": scalar tensor, other terms...}`: the forward pass on one
  micro-batch (already on the device); the engine does backward, accumulation, clipping, the optimizer,
  the schedule, EMA, logging and checkpoints. `stage` is the current entry of `config.stages`
  (a free dict, e.g. {"steps": 200000, "height": 256, "width": 384}) or {} without stages.
- `validate_fn(trainer) -> {name: float}`: run on every process every `validate_every` steps and at
  the end (it may use trainer.accelerator to gather); the main process logs what it returns.
  `image_validator` makes one of mean PSNR / SSIM over held-out items (train-lrm, train-vae).
- `trainer.summary()`: {"steps", "loss", "val"} at the end, what the train commands print.

Steps count optimizer updates; one step = `grad_accum` micro-batches of `batch_size` per process.
Stages: stage i lasts `stages[i]["steps"]` steps; the last one runs on until `max_steps`.

Data order is a function of (seed, stage, position) only: each epoch is a seeded permutation split
into global batches, rank r takes the r-th slice of each. For exact resumption a dataset's own
randomness (random crops) must be a function of its seed, the item index and the epoch: the engine
calls `dataset.set_epoch(epoch)` when the dataset has it, before each epoch's loader is made.

Checkpoints (`output_dir/checkpoints/step_00000100/`, written to a temporary folder then renamed;
the last `keep_checkpoints` are kept) hold safetensors and JSON only, never pickle:
  model.safetensors, ema.safetensors (when EMA is on), optimizer.safetensors (state tensors, keyed
  `state/<param name>/<key>`) + optimizer.json (param groups, non-tensor state), trainer_state.json
  (step, stage, data position, scheduler state, world size, seeds) and rng_rank<r>.safetensors
  (each process's torch/CUDA/numpy/python RNG state as tensors, the non-tensor parts in its header).
Resuming restores all of it, so the resumed run's next step computes the same loss as an
uninterrupted run would have.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, ProjectConfiguration, send_to_device, set_seed
from safetensors import safe_open
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from backend.atomic import atomic_write_text
from backend.errors import InputError
from backend.models.weights import config_from_dict, load_state_dict, save_state_dict

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step_"
MODEL_WEIGHTS = "model.safetensors"   # in each checkpoint folder
EMA_WEIGHTS = "ema.safetensors"       # ... when the run keeps an EMA
CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything that shapes a run; saved as output_dir/train_config.json."""
    output_dir: str = "runs/train"
    max_steps: int = 1000
    lr: float = 4e-4
    lr_min: float = 1e-5                    # cosine schedule end value
    warmup_steps: int = 0                   # linear warmup from 0 to lr
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-4
    grad_clip: float | None = 1.0           # max global grad norm; None or 0 = no clipping
    mixed_precision: str = "no"             # "no" | "bf16" | "fp16"
    batch_size: int = 1                     # per process and micro-batch
    grad_accum: int = 1                     # micro-batches per optimizer step
    num_workers: int = 0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 1000            # 0 = only at the end
    validate_every: int = 0                 # 0 = only at the end
    ema_decay: float | None = None          # None = off; e.g. 0.9999
    gradient_checkpointing: bool = False    # read by the trainer when it builds its model
    keep_checkpoints: int = 3
    stages: list[dict] = field(default_factory=list)  # progressive stages, each with "steps"

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        self.stages = [dict(s) for s in self.stages]
        self._validate()

    def _validate(self) -> None:
        def fail(problem: str, hint: str) -> None:
            raise InputError(f"invalid training config: {problem}", hint)

        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                fail(f"{name} must be a positive integer, got {getattr(self, name)!r}", "use e.g. 1")
        for name in ("num_workers", "warmup_steps", "checkpoint_every", "validate_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                fail(f"{name} must be an integer >= 0, got {getattr(self, name)!r}", "use e.g. 0")
        if self.mixed_precision not in MIXED_PRECISION:
            fail(f"mixed_precision {self.mixed_precision!r} is not one of {', '.join(MIXED_PRECISION)}",
                 "use bf16 on recent GPUs, no on CPU")
        if not 0 <= self.lr_min <= self.lr:
            fail(f"need 0 <= lr_min <= lr, got lr {self.lr}, lr_min {self.lr_min}", "e.g. lr 4e-4, lr_min 1e-5")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            fail(f"betas must be two numbers in [0, 1), got {self.betas}", "use (0.9, 0.95)")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            fail(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}", "use e.g. 0.9999, or leave EMA off")
        for i, stage in enumerate(self.stages):
            if not isinstance(stage.get("steps"), int) or stage["steps"] < 1:
                fail(f"stage {i} needs a positive integer 'steps', got {stage!r}",
                     'write stages like [{"steps": 1000, "height": 256, "width": 384}, ...]')

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "TrainConfig":
        return config_from_dict(cls, data, source="training config")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def stage_at(self, step: int) -> int:
        """Index of the stage that step `step` (0-based) belongs to; 0 without stages."""
        end = 0
        for i, stage in enumerate(self.stages):
            end += stage["steps"]
            if step < end:
                return i
        return max(len(self.stages) - 1, 0)

    def stage_start(self, index: int) -> int:
        return sum(s["steps"] for s in self.stages[:index])


def cosine_with_warmup(step: int, config: TrainConfig) -> float:
    """lr multiplier: linear warmup to 1 over warmup_steps, then cosine down to lr_min/lr at max_steps."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(config.max_steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    floor = config.lr_min / config.lr if config.lr > 0 else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a module's trainable parameters (float32 copies, on its device)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for name, p in module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise InputError(f"EMA weights lack {len(missing)} parameters ({', '.join(missing[:3])}, ...)",
                             "resume with the same model and --ema-decay as the checkpoint's run")
        for name, value in state.items():
            if name in self.shadow:
                self.shadow[name].copy_(value)


def epoch_batches(num_items: int, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's global batches: a permutation seeded by (seed, epoch), tiled when the data set is
    smaller than one batch, the remainder dropped (drop_last)."""
    if num_items < 1:
        raise InputError("the training data set is empty", "check --data and the problems listed above")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_items, generator=generator).tolist()
    while len(order) < global_batch:
        order += order
    count = len(order) // global_batch
    return [order[i * global_batch:(i + 1) * global_batch] for i in range(count)]


def _seed_worker(worker_id: int) -> None:
    """DataLoader workers: numpy and random follow torch's per-worker seed (which the loader's
    generator fixes), so workers are reproducible."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class Trainer:
    """Accelerator + AdamW + cosine schedule + EMA + checkpoints around a model (module docstring)."""

    def __init__(self, config: TrainConfig, model: nn.Module | Callable[[], nn.Module],
                 run_info: Mapping[str, Any] | None = None):
        self.config = config
        out = Path(config.output_dir)
        # Without a GPU, accelerate runs several launched processes as one gloo group only when told cpu.
        several_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = Accelerator(
            cpu=several_cpu, mixed_precision=config.mixed_precision, log_with="tensorboard",
            project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))
        acc = self.accelerator
        self.is_main = acc.is_main_process
        self.world_size = acc.num_processes
        set_seed(config.seed)  # same on every rank: identical model init
        module = model() if callable(model) and not isinstance(model, nn.Module) else model
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise InputError("the model has no trainable parameters", "unfreeze what should be trained")
        # FSDP shards parameters at prepare(): the optimizer must be made from the prepared model.
        if acc.distributed_type == DistributedType.FSDP:
            if config.ema_decay is not None:
                raise InputError("EMA is not supported with FSDP in this engine", "train without --ema-decay")
            self.model = acc.prepare(module)
            self.optimizer = acc.prepare(self._adamw(self.model))
        else:
            self.model, self.optimizer = acc.prepare(module, self._adamw(module))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer.optimizer, lambda s: cosine_with_warmup(s, config))
        self.ema = EMA(self.unwrapped_model, config.ema_decay) if config.ema_decay is not None else None
        self.rank_seed = config.seed + acc.process_index
        set_seed(config.seed, device_specific=True)  # per-rank randomness (dropout, augmentation)
        self.step = 0
        self.data_position = 0            # micro-batches consumed within the current stage
        self.history: list[dict[str, float]] = []
        self._stage_of_position = 0
        if self.is_main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / CONFIG_FILE, config.to_json() + "\n")
            atomic_write_text(out / "run.json", json.dumps({
                "seed": config.seed, "rank_seeds": [config.seed + r for r in range(self.world_size)],
                "world_size": self.world_size, "distributed_type": str(acc.distributed_type),
                "mixed_precision": config.mixed_precision, "device": str(acc.device),
                "torch": torch.__version__, **dict(run_info or {})}, indent=2) + "\n")
        acc.init_trackers("tensorboard", config=_flat_hparams(config.to_dict()))
        acc.wait_for_everyone()

    def _adamw(self, module: nn.Module) -> torch.optim.AdamW:
        c = self.config
        return torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=c.lr,
                                 betas=c.betas, weight_decay=c.weight_decay)

    # Properties ---------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    @property
    def stage_index(self) -> int:
        return self.config.stage_at(self.step)

    @property
    def stage(self) -> dict:
        return self.config.stages[self.stage_index] if self.config.stages else {}

    # Training loop -------------------------------------------------------------------------------------
    def fit(self, train_data: Dataset | Callable[[int, dict], Dataset],
            step_fn: Callable[[nn.Module, Any, dict], Mapping[str, Tensor]],
            collate_fn: Callable | None = None,
            validate_fn: Callable[["Trainer"], Mapping[str, float]] | None = None) -> list[dict[str, float]]:
        """Train until max_steps; returns the logged records (also in output_dir/metrics.jsonl)."""
        c, acc = self.config, self.accelerator
        bar = tqdm(total=c.max_steps, initial=self.step, disable=not self.is_main, desc="train",
                   dynamic_ncols=True)
        batches: Iterator | None = None
        loaded_stage = None
        last_saved = self.step if self._latest_checkpoint_step() == self.step else None
        while self.step < c.max_steps:
            stage_index = self.stage_index
            if stage_index != loaded_stage:
                if stage_index != self._stage_of_position:  # entering a new stage: its data from the start
                    self._stage_of_position, self.data_position = stage_index, 0
                dataset = train_data(stage_index, self.stage) if _is_factory(train_data) else train_data
                batches = self._micro_batches(dataset, collate_fn)
                loaded_stage = stage_index
            started = time.perf_counter()
            terms = self._optimizer_step(batches, step_fn)
            self.step += 1
            bar.update(1)
            if self.step % c.log_every == 0 or self.step == c.max_steps:
                record = {"step": self.step, **terms, "lr": self.scheduler.get_last_lr()[0],
                          "step_time_s": time.perf_counter() - started}
                self.log(record)
                bar.set_postfix(loss=f"{terms['loss']:.4g}")
            if validate_fn is not None and (
                    (c.validate_every and self.step % c.validate_every == 0) or self.step == c.max_steps):
                self.log({"step": self.step, **{f"val/{k}": float(v) for k, v in validate_fn(self).items()}})
            if (c.checkpoint_every and self.step % c.checkpoint_every == 0) or self.step == c.max_steps:
                if last_saved != self.step:
                    self.save_checkpoint()
                    last_saved = self.step
        bar.close()
        acc.wait_for_everyone()
        return self.history

    def _micro_batches(self, dataset: Dataset, collate_fn: Callable | None) -> Iterator:
        """Endless micro-batches for this rank from data_position on, epoch by epoch."""
        c, acc = self.config, self.accelerator
        global_batch = c.batch_size * self.world_size
        rank = acc.process_index
        stage = self._stage_of_position
        while True:
            per_epoch = len(epoch_batches(len(dataset), global_batch, 0, 0))
            epoch, offset = divmod(self.data_position, per_epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            batches = epoch_batches(len(dataset), global_batch, c.seed + 7919 * stage, epoch)[offset:]
            mine = [b[rank * c.batch_size:(rank + 1) * c.batch_size] for b in batches]
            generator = torch.Generator().manual_seed(
                c.seed * 1_000_003 + stage * 10_007 + epoch * 101 + rank)  # worker seeds
            loader = DataLoader(dataset, batch_sampler=mine, num_workers=c.num_workers, collate_fn=collate_fn,
                                worker_init_fn=_seed_worker, generator=generator,
                                pin_memory=acc.device.type == "cuda")
            for batch in loader:
                self.data_position += 1
                yield send_to_device(batch, acc.device)

    def _optimizer_step(self, batches: Iterator, step_fn) -> dict[str, float]:
        c, acc = self.config, self.accelerator
        self.model.train()
        totals: dict[str, Tensor] = {}
        for micro in range(c.grad_accum):
            batch = next(batches)
            sync = micro == c.grad_accum - 1
            # The prepared model's forward already runs under the mixed-precision autocast; the rest of
            # step_fn (rendering, losses) stays in float32 unless it asks for autocast itself.
            with (acc.no_sync(self.model) if not sync else contextlib.nullcontext()):
                terms = step_fn(self.model, batch, self.stage)
                if "loss" not in terms:
                    raise KeyError("step_fn must return a dict with a 'loss' entry")
                acc.backward(terms["loss"] / c.grad_accum)
            for name, value in terms.items():
                value = value.detach().float() if isinstance(value, Tensor) else torch.tensor(float(value))
                totals[name] = totals.get(name, 0.0) + value.to(acc.device) / c.grad_accum
        max_norm = c.grad_clip if c.grad_clip else float("inf")
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.unwrapped_model)
        logged = self.step + 1
        if logged % c.log_every == 0 or logged == c.max_steps:
            names = sorted(totals)
            stacked = acc.reduce(torch.stack([totals[n] for n in names]), reduction="mean")
            result = {n: float(v) for n, v in zip(names, stacked.tolist())}
            result["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
            return result
        return {"loss": float(totals["loss"])}

    # Logging --------------------------------------------------------------------------------------------
    def log(self, record: Mapping[str, float]) -> None:
        """Scalars to TensorBoard, metrics.jsonl and history (main process only)."""
        record = dict(record)
        self.history.append(record)
        if not self.is_main:
            return
        step = int(record["step"])
        self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
        with open(Path(self.config.output_dir) / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def log_images(self, name: str, images: Tensor) -> None:
        """Sample images [N, 3, H, W] in [0, 1] to TensorBoard (main process only)."""
        if self.is_main:
            tracker = self.accelerator.get_tracker("tensorboard", unwrap=True)
            tracker.add_images(name, images.detach().float().clamp(0, 1).cpu(), global_step=self.step)

    # Weights --------------------------------------------------------------------------------------------
    def full_state_dict(self, ema: bool = True) -> dict[str, Tensor]:
        """The model's full weights on CPU (EMA weights when on and `ema`); call on every process."""
        model_state, _ = self._gather_states(optimizer=False)
        if ema and self.ema is not None:
            model_state = {**model_state, **{k: v.detach().cpu() for k, v in self.ema.state_dict().items()}}
        return model_state

    def export(self, model: nn.Module, write: Callable[[nn.Module], None], prefix: str = "") -> nn.Module:
        """`model` (on any device, the meta device included) given the trained weights, EMA when on, as float32
        (the keys of the trained module that start with `prefix`, less it), then `write(model)` on the main
        process. Every process calls it; it returns when the write is done."""
        state = {k[len(prefix):]: v.float() if v.is_floating_point() else v
                 for k, v in self.full_state_dict(ema=True).items() if k.startswith(prefix)}
        model.load_state_dict(state, strict=True, assign=True)
        if self.is_main:
            write(model)
        self.accelerator.wait_for_everyone()
        return model

    def _gather_states(self, optimizer: bool = True) -> tuple[dict, dict]:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state, optim_state = get_state_dict(self.model, [self.optimizer.optimizer] if optimizer else [],
                                                  options=options)
        return {k: v for k, v in model_state.items()}, optim_state

    # Checkpoints ----------------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.config.output_dir) / CHECKPOINT_DIR

    def _latest_checkpoint_step(self) -> int | None:
        latest = latest_checkpoint(self.config.output_dir)
        return None if latest is None else int(latest.name[len(CHECKPOINT_PREFIX):])

    def save_checkpoint(self) -> Path:
        """Write checkpoints/step_<step>/ atomically (all processes call this); returns its path."""
        acc = self.accelerator
        final = self.checkpoint_dir / f"{CHECKPOINT_PREFIX}{self.step:08d}"
        tmp = self.checkpoint_dir / f".tmp-{final.name}"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        model_state, optim_state = self._gather_states()
        if self.is_main:
            save_state_dict(model_state, tmp / MODEL_WEIGHTS)
            if self.ema is not None:
                save_state_dict(self.ema.state_dict(), tmp / EMA_WEIGHTS)
            tensors, extra = _flatten_optimizer(optim_state)
            save_state_dict(tensors, tmp / "optimizer.safetensors")
            (tmp / "optimizer.json").write_text(json.dumps(extra, indent=1))
            (tmp / "trainer_state.json").write_text(json.dumps({
                "step": self.step, "stage": self._stage_of_position, "data_position": self.data_position,
                "scheduler": _jsonable(self.scheduler.state_dict()), "world_size": self.world_size,
                "seed": self.config.seed, "config": self.config.to_dict()}, indent=1))
        tensors, extra = _rng_state()
        save_state_dict(tensors, tmp / f"rng_rank{acc.process_index}.safetensors",
                        metadata={"rng": json.dumps(extra)})
        acc.wait_for_everyone()
        if self.is_main:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            kept = list_checkpoints(self.config.output_dir)
            for old in kept[:-self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def resume(self, checkpoint: str | os.PathLike | None = None) -> bool:
        """Load `checkpoint` (default: the latest in output_dir); False when there is none to load."""
        path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(self.config.output_dir)
        if path is None:
            return False
        if not (path / "trainer_state.json").is_file():
            raise InputError(f"{path} is not a training checkpoint (trainer_state.json is missing)",
                             "point at a checkpoints/step_… folder, or start without --resume")
        state = json.loads((path / "trainer_state.json").read_text())
        if state["world_size"] != self.world_size:
            raise InputError(f"checkpoint {path} was written by {state['world_size']} processes, this run has "
                             f"{self.world_size}", "resume with the same number of processes (the data order "
                             "depends on it)")
        model_state = load_state_dict(path / MODEL_WEIGHTS)
        extra = json.loads((path / "optimizer.json").read_text())
        optim_state = _unflatten_optimizer(load_state_dict(path / "optimizer.safetensors"), extra)
        set_state_dict(self.model, [self.optimizer.optimizer], model_state_dict=model_state,
                       optim_state_dict=optim_state, options=StateDictOptions(full_state_dict=True, strict=True))
        if self.ema is not None:
            if not (path / EMA_WEIGHTS).is_file():
                raise InputError(f"checkpoint {path} has no EMA weights", "resume without --ema-decay")
            self.ema.load_state_dict(load_state_dict(path / EMA_WEIGHTS, device=self.device))
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.data_position = state["step"], state["data_position"]
        self._stage_of_position = state["stage"]
        rng_file = path / f"rng_rank{self.accelerator.process_index}.safetensors"
        with safe_open(rng_file, framework="pt") as f:
            _set_rng_state({k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["rng"]))
        return True

    def end(self) -> None:
        self.accelerator.end_training()

    def summary(self) -> dict:
        """{"steps", "loss": the last logged loss, "val": the last value of each validation metric}: what the
        train commands print when a run ends."""
        losses = [r["loss"] for r in self.history if "loss" in r]
        val = {k[4:]: v for r in self.history for k, v in r.items() if k.startswith("val/")}
        return {"steps": self.step, "loss": losses[-1] if losses else None, "val": val}


def image_validator(module: nn.Module, dataset: Dataset, max_clips: int, collate_fn: Callable,
                    images: Callable[["Trainer", dict], tuple[Tensor, Tensor]], image_name: str):
    """validate_fn for the engine: mean PSNR / SSIM over up to max_clips items of `dataset`, split over
    ranks. `images(trainer, batch)` gives (output, target) [V, 3, H, W] in [0, 1] of one item's batch
    (on the device); item 0's first two pairs go to TensorBoard as `image_name`. `module` is in eval
    mode meanwhile."""
    from backend.training.metrics import image_metrics

    def validate(trainer: Trainer) -> dict[str, float]:
        acc = trainer.accelerator
        was_training = module.training
        module.eval()
        sums = torch.zeros(3, device=acc.device)
        for i in range(acc.process_index, min(max_clips, len(dataset)), acc.num_processes):
            output, target = images(trainer, send_to_device(collate_fn([dataset[i]]), acc.device))
            m = image_metrics(output, target)
            sums += torch.tensor([m["psnr"], m["ssim"], 1.0], device=acc.device)
            if i == 0:
                trainer.log_images(image_name, torch.cat([output[:2], target[:2]], dim=-1))
        sums = acc.reduce(sums, reduction="sum")
        module.train(was_training)
        n = max(float(sums[2]), 1.0)
        return {"psnr": float(sums[0]) / n, "ssim": float(sums[1]) / n}

    return validate


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Finished checkpoint folders of a run, oldest first (temporary folders are ignored)."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
                  and p.name[len(CHECKPOINT_PREFIX):].isdigit())


def checkpoint_weights(checkpoint: Path) -> Path:
    """The weights file of a checkpoint folder that an export of it would write: EMA when the run kept one."""
    ema = checkpoint / EMA_WEIGHTS
    return ema if ema.is_file() else checkpoint / MODEL_WEIGHTS


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


# Helpers -------------------------------------------------------------------------------------------------
def _is_factory(data: Any) -> bool:
    return callable(data) and not isinstance(data, Dataset)


def _flat_hparams(data: dict) -> dict:
    """TensorBoard hparams take scalars and strings only."""
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in data.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Tensor):
        return value.tolist()
    if callable(value):
        return None
    return value


def _flatten_optimizer(optim_state: dict) -> tuple[dict[str, Tensor], dict]:
    """{"state": {name: {key: value}}, "param_groups": [...]} -> (tensors, JSON for the rest)."""
    tensors, scalars = {}, {}
    for name, entry in optim_state.get("state", {}).items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"state/{name}/{key}"] = value.detach().cpu()
            else:
                scalars.setdefault(str(name), {})[key] = value
    return tensors, {"param_groups": _jsonable(optim_state.get("param_groups", [])), "scalars": scalars}


def _unflatten_optimizer(tensors: Mapping[str, Tensor], extra: dict) -> dict:
    state: dict[str, dict] = {}
    for flat, value in tensors.items():
        _, rest = flat.split("/", 1)
        name, key = rest.rsplit("/", 1)
        state.setdefault(name, {})[key] = value
    for name, entries in extra.get("scalars", {}).items():
        state.setdefault(name, {}).update(entries)
    groups = []
    for group in extra["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def _rng_state() -> tuple[dict[str, Tensor], dict]:
    """This process's RNG states: tensors for safetensors, the rest as JSON."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(keys.astype(np.int64))
    version, internal, gauss_next = random.getstate()
    tensors["python"] = torch.tensor(internal, dtype=torch.int64)
    return tensors, {"numpy": [kind, int(pos), int(has_gauss), float(cached)],
                     "python": [version, gauss_next]}


def _set_rng_state(tensors: Mapping[str, Tensor], extra: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda")), key=lambda k: int(k[4:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])
    kind, pos, has_gauss, cached = extra["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, gauss_next = extra["python"]
    random.setstate((version, tuple(tensors["python"].tolist()), gauss_next))
