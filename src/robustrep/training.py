"""One training loop for every model family, on one process or many (`torchrun`).

A model owns its losses and tells the loop what else it needs (every part optional):

    loss(x, y, phase=...) -> {"loss": ..., ...}   # "loss" is what that phase's optimiser minimises
    optimizers() -> [OptimizerSpec(...)]          # default: one Adam, named "main", over every parameter
    phases = ["critic"] * 5 + ["generator"]       # the schedule, cycled over batches (default: each
                                                  # optimiser once, in order); a phase is an optimiser name
    phases_share_batch = True                     # every phase of the schedule on each batch, in order
                                                  # (the AAE, WAE-GAN); default: one phase per batch
    monitor = "loss"                              # the epoch mean that picks best.pt; None: no best.pt
    on_fit_start(X), on_epoch_start(epoch, epochs), after_step(phase)   # closed forms, schedules, clipping
    on_epoch_end(epoch, epochs) -> {"test_error": ...}   # held-out numbers kept in the epoch's metrics

The loop owns the rest: batches drawn from tensors already on the device; for each batch one phase,
or the whole schedule with `phases_share_batch` (only the phase's parameters receive gradients);
gradient clipping, a learning-rate schedule and EMA weights (`torch.optim.swa_utils.AveragedModel`); a
progress bar; one line per epoch in `metrics.jsonl`.

Runs are killable at any instant. After each epoch the loop writes `checkpoint/best.pt` (when the
monitored value improved), then `checkpoint/last.pt` (model, every optimiser and schedule by name, the
EMA, the step count and the whole metrics history), then rewrites `metrics.jsonl` from that history;
every write is atomic. Randomness is re-seeded from (seed, epoch) at the start of each epoch, so
`resume=True` ends exactly where the uninterrupted run ends.

Under `torchrun` (DistributedDataParallel; gloo on CPU, NCCL on CUDA) each rank trains on its shard of
the (seed, epoch) order with its own noise, every loss goes through the wrapped module's `forward`, the
epoch means are all-reduced, and only rank 0 writes files.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import manifest
from .errors import UserError
from .runs import load_weights, read_metrics, read_yaml, save_weights, write_yaml
from .utils import is_main_process, resolve_device  # noqa: F401  (is_main_process: part of this module's API)

OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}
LR_SCHEDULES = ("constant", "cosine", "linear")


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimiser of a model: its name (also the phase that uses it), the submodules it trains (by
    attribute name; empty: every parameter), its kind and settings (lr None: fit's lr)."""

    name: str = "main"
    modules: tuple[str, ...] = ()
    kind: str = "adam"
    lr: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.0
    weight_decay: float = 0.0

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        if not self.modules:
            return [p for p in model.parameters() if p.requires_grad]
        return [p for m in self.modules for p in getattr(model, m).parameters() if p.requires_grad]

    def build(self, params, lr: float) -> torch.optim.Optimizer:
        if self.kind not in OPTIMIZERS:
            raise UserError(f"unknown optimiser {self.kind!r}: choose one of {', '.join(OPTIMIZERS)}")
        lr = self.lr if self.lr is not None else lr
        if self.kind == "adam":
            return torch.optim.Adam(params, lr=lr, betas=self.betas, weight_decay=self.weight_decay)
        return OPTIMIZERS[self.kind](params, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)


def optimizer_specs(model: nn.Module) -> list[OptimizerSpec]:
    return list(model.optimizers()) if hasattr(model, "optimizers") else [OptimizerSpec()]


def phase_schedule(model: nn.Module, specs: list[OptimizerSpec]) -> list[str]:
    return list(getattr(model, "phases", None) or [s.name for s in specs])


def phase_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Phase (optimiser name) -> the parameters it trains, for the phases that train any."""
    groups = {s.name: s.parameters(model) for s in optimizer_specs(model)}
    return {name: params for name, params in groups.items() if params}


def train_only(trainable: dict[str, list[nn.Parameter]], phase: str | None) -> None:
    """Let only `phase`'s parameters receive gradients (None: all again). The generator step of a GAN then
    computes no gradient for the discriminator it passes through."""
    for name, params in trainable.items():
        for p in params:
            p.requires_grad_(phase is None or name == phase)


def compute_loss(model: nn.Module, x, y, phase: str) -> dict[str, torch.Tensor]:
    """The model's losses for one phase; a model with one optimiser and no phases is called as loss(x, y)."""
    if hasattr(model, "optimizers") or getattr(model, "phases", None):
        return model.loss(x, y, phase=phase)
    return model.loss(x, y)


class _Objective(nn.Module):
    """The model's loss as a forward pass, so that DistributedDataParallel sees (and syncs) every phase."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, y, phase: str):
        return compute_loss(self.model, x, y, phase)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**63


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """Multiplier of the base learning rate at optimiser step `step` of `total` (linear warm-up first)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    return 1.0


def distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun and not yet started."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _State:
    """Everything a checkpoint holds, with its save and load."""

    def __init__(self, model, optimizers: dict, schedulers: dict, ema):
        self.model, self.optimizers, self.schedulers, self.ema = model, optimizers, schedulers, ema
        self.epoch, self.step, self.best, self.history = 0, 0, math.inf, []

    def save(self, path: Path) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "history": json.dumps(self.history),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        manifest.write(path, buffer.getvalue())  # recorded with its SHA-256, checked on load

    def load(self, path: Path, device) -> None:
        manifest.verify(path)  # a flipped byte is an error naming the file
        try:
            with warnings.catch_warnings():  # torch's warning about a pickle would be a second line
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location=device, weights_only=True)
            self.model.load_state_dict(state["model"])
            if set(state["optimizers"]) != set(self.optimizers):
                raise KeyError("optimisers")
            for k, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][k])
            for k, s in self.schedulers.items():
                s.load_state_dict(state["schedulers"][k])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            self.epoch, self.step, self.best = int(state["epoch"]), int(state["step"]), float(state["best"])
            self.history = json.loads(state["history"])
        except Exception as err:
            raise UserError(
                f"checkpoint {path} is corrupt or does not match the model ({type(err).__name__}); "
                "delete the run folder and start again"
            ) from None


def _start_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None to start afresh; refuses to overwrite a finished or
    checkpointed run without --resume. A folder with no checkpoint holds nothing to keep."""
    ckpt = run_dir / "checkpoint" / "last.pt"
    if resume:
        if ckpt.exists():
            return ckpt
        if not (run_dir / "config.yaml").exists():
            raise UserError(f"nothing to resume in {run_dir}: no checkpoint/last.pt (start it without --resume)")
        return None  # killed before its first checkpoint: start again from epoch 0
    if ckpt.exists() or (run_dir / "model.safetensors").exists():
        raise UserError(f"{run_dir} already holds a run: pass --resume to continue it, or choose a new --out")
    return None


def fit(
    model: nn.Module,
    X,
    y: torch.Tensor | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    run_dir: str | Path | None = None,
    seed: int = 0,
    device="auto",
    resume: bool = False,
    progress: bool = True,
    config: dict | None = None,
    grad_clip: float | None = None,
    lr_schedule: str = "constant",
    warmup_steps: int = 0,
    ema_decay: float | None = None,
) -> list[dict]:
    """Train `model` on images `X` (a tensor or a lazy view such as Color-MNIST) and optional labels `y`.

    With `run_dir`, writes config.yaml (from `config`), metrics.jsonl, checkpoints and, at the end,
    model.safetensors (and ema.safetensors with `ema_decay`). Returns the metrics of every epoch of
    the run, resumed parts included (each with its "seconds").
    """
    from . import validate

    validate.nonnegative(epochs, "epochs", integer=True, high=10**6)
    validate.positive(batch_size, "batch_size", integer=True)
    validate.positive(lr, "lr", high=1e3)
    validate.nonnegative(warmup_steps, "warmup_steps", integer=True, high=10**9)
    validate.seed(seed, "seed")
    if grad_clip is not None:
        validate.positive(grad_clip, "grad_clip")
    if ema_decay is not None:
        validate.probability(ema_decay, "ema_decay", open_low=True, open_high=True)
    validate.choice(lr_schedule, "lr_schedule", LR_SCHEDULES)
    rank, world = distributed()
    if world > 1 and torch.cuda.is_available() and str(device) in ("auto", "cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    device = resolve_device(device)
    model.to(device).train()
    X = X.to(device)
    y = y.to(device) if y is not None else None
    run_dir = validate.output_dir(run_dir, "run_dir") if run_dir is not None else None
    if run_dir is not None and rank == 0:
        manifest.clean_orphans(run_dir)  # temp files of writes a kill interrupted
    ckpt = _start_run_dir(run_dir, resume) if run_dir is not None else None
    if ckpt is None and hasattr(model, "on_fit_start"):
        model.on_fit_start(X)  # closed forms (PCA), data-dependent initialisation

    specs = optimizer_specs(model)
    phases = phase_schedule(model, specs)
    unknown = set(phases) - {s.name for s in specs}
    if unknown:
        raise UserError(f"{type(model).__name__}: phases {sorted(unknown)} have no optimiser")
    trainable = phase_parameters(model)  # PCA: none at all
    optimizers = {s.name: s.build(trainable[s.name], lr) for s in specs if s.name in trainable}
    n = len(X)
    steps_per_epoch = math.ceil(math.ceil(n / world) / batch_size)
    # a GAN's Algorithm 1 draws a new minibatch for each step; the AAE's phases all use one (Makhzani et al. 2016)
    per_batch = len(phases) if getattr(model, "phases_share_batch", False) else 1
    total = {name: epochs * steps_per_epoch * per_batch * phases.count(name) // len(phases) for name in optimizers}
    schedulers = {
        name: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step, name=name: lr_factor(lr_schedule, step, total[name], warmup_steps)
        )
        for name, opt in optimizers.items()
    }
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True) if ema_decay else None
    state = _State(model, optimizers, schedulers, ema)
    if ckpt is not None:
        state.load(ckpt, device)
        if epochs < state.epoch:
            raise UserError(f"{run_dir} has trained {state.epoch} epochs already: --epochs must be >= {state.epoch}")
    main_process = rank == 0
    if run_dir is not None and main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        if config is not None:
            write_yaml(run_dir / "config.yaml", config)
        _write_metrics(run_dir, state.history)  # drops lines of epochs after the checkpoint

    objective = _Objective(model)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=ids, find_unused_parameters=len(optimizers) > 1
        )
    multi_phase = len(optimizers) > 1
    bar = None
    if progress and main_process:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=(epochs - state.epoch) * steps_per_epoch,
            desc=type(model).__name__,
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )
    for epoch in range(state.epoch, epochs):
        t0 = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(n, device=device)  # the same order on every rank; each takes its shard
        if world > 1:
            order = order[rank::world]
            torch.manual_seed(epoch_seed(seed, epoch) + rank)  # noise differs between ranks
        if hasattr(model, "on_epoch_start"):
            model.on_epoch_start(epoch, epochs)
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            xb, yb = X[idx], None if y is None else y[idx]
            for _ in range(per_batch):
                phase = phases[state.step % len(phases)]
                if multi_phase:
                    train_only(trainable, phase)
                losses = objective(xb, yb, phase)
                if phase in optimizers:
                    optimizer = optimizers[phase]
                    optimizer.zero_grad(set_to_none=True)
                    losses["loss"].backward()
                    if grad_clip is not None:
                        nn.utils.clip_grad_norm_(trainable[phase], grad_clip)
                    optimizer.step()
                    schedulers[phase].step()
                if hasattr(model, "after_step"):
                    model.after_step(phase)
                if ema is not None:
                    ema.update_parameters(model)
                state.step += 1
                for k, v in losses.items():  # summed as tensors: no device sync per step
                    key = k if not multi_phase else f"{phase}/{k}"
                    sums[key] = sums.get(key, 0) + v.detach() * len(idx)
                    counts[key] = counts.get(key, 0) + len(idx)
            if bar is not None:
                bar.update(1)
        if multi_phase:
            train_only(trainable, None)
        record = {
            "epoch": epoch + 1,
            **_epoch_means(sums, counts, world, device),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if hasattr(model, "on_epoch_end"):  # after the clock: "seconds" stays training time alone
            extra = model.on_epoch_end(epoch + 1, epochs) or {}
            model.train()
            record.update({k: float(v) for k, v in extra.items()})
        broken = [k for k, v in record.items() if k.split("/")[-1] == "loss" and not math.isfinite(v)]
        if broken:
            raise UserError(
                f"the {broken[0]} became {record[broken[0]]} in epoch {epoch + 1}: lower --lr or check the data"
            )
        monitor = getattr(model, "monitor", "loss")
        value = record.get(monitor, math.nan) if monitor else math.nan
        state.epoch = epoch + 1
        state.history.append(record)
        if bar is not None:
            bar.set_postfix(epoch=epoch + 1, **({monitor: f"{value:.4g}"} if monitor in record else {}))
        if run_dir is not None and main_process:
            if value < state.best:
                state.best = value
                state.save(run_dir / "checkpoint" / "best.pt")  # before last.pt: never behind it
            state.save(run_dir / "checkpoint" / "last.pt")
            _write_metrics(run_dir, state.history)
    if bar is not None:
        bar.close()
    model.eval()
    if run_dir is not None and main_process:
        if ema is not None:
            save_weights(ema.module, run_dir / "ema.safetensors")
        save_weights(model, run_dir / "model.safetensors")
    return state.history


def _epoch_means(sums: dict, counts: dict, world: int, device) -> dict[str, float]:
    keys = list(sums)  # the same order on every rank
    if not keys:
        return {}
    totals = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=device) for k in keys])
    ns = torch.tensor([counts[k] for k in keys], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(totals)
        dist.all_reduce(ns)
    return {k: float(t / c) for k, t, c in zip(keys, totals.tolist(), ns.tolist())}


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl from the checkpoint's history, atomically (a kill never leaves a half line)."""
    text = "".join(json.dumps(r) + "\n" for r in history)
    manifest.write(run_dir / "metrics.jsonl", text.encode())


def train_seconds(history: list[dict]) -> float:
    """Wall time of all epochs of a run, resumed parts included."""
    return round(sum(r.get("seconds", 0.0) for r in history), 1)


def fit_or_reuse(
    model: nn.Module, X, y: torch.Tensor | None = None, *, run_dir, config: dict, device, **fit_kwargs
) -> tuple[nn.Module, float]:
    """A reproduction's model in its own folder: trained there, continued after a kill, or reused when
    finished; a folder holding a model trained with another `config` is refused. Returns the model in
    eval mode and its training wall time, resumed parts included."""
    run_dir = Path(run_dir)
    if (run_dir / "config.yaml").exists() and read_yaml(run_dir / "config.yaml") != config:
        what = config.get("model", "model")
        raise UserError(f"{run_dir} holds a {what} trained with other settings: choose a new --out or delete it")
    if (run_dir / "model.safetensors").exists():
        return load_weights(model, run_dir / "model.safetensors").to(device).eval(), train_seconds(
            read_metrics(run_dir)
        )
    history = fit(
        model,
        X,
        y,
        run_dir=run_dir,
        device=device,
        resume=(run_dir / "config.yaml").exists(),
        config=config,
        **fit_kwargs,
    )
    return model.eval(), train_seconds(history)
