"""One training loop for every model.

The model owns its loss (`model.loss(x, y) -> {"loss": ..., ...}`) and may define
`on_epoch_start(epoch, epochs)` for schedules. The loop: Adam; batches drawn from tensors already in
memory (on the training device); a progress bar; one line per epoch in `metrics.jsonl`; an atomic
checkpoint after every epoch (`checkpoint/last.pt`, and `best.pt` for the lowest epoch loss) with
model, optimiser, and epoch. Randomness is re-seeded from (seed, epoch) at the start of each epoch,
so `resume=True` after a kill ends exactly where the uninterrupted run would have ended.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from .errors import UserError
from .runs import save_weights, write_yaml
from .utils import atomic_write, resolve_device


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**63


def _save_checkpoint(path: Path, model, optimizer, epoch: int, best: float) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "epoch": torch.tensor(epoch), "best": torch.tensor(best)}
    atomic_write(path, lambda f: torch.save(state, f))


def _load_checkpoint(path: Path, model, optimizer, device) -> tuple[int, float]:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except Exception as err:
        raise UserError(f"checkpoint {path} is corrupt or does not match the model ({type(err).__name__}); "
                        "delete the run folder and start again") from None
    return int(state["epoch"]), float(state["best"])


def fit(model: nn.Module, X, y: torch.Tensor | None = None, *, epochs: int = 10, batch_size: int = 128,
        lr: float = 1e-3, run_dir: str | Path | None = None, seed: int = 0, device="auto",
        resume: bool = False, progress: bool = True, config: dict | None = None) -> list[dict]:
    """Train `model` on images `X` (a tensor or a lazy view such as Color-MNIST) and optional labels `y`.

    With `run_dir`, writes config.yaml (from `config`), metrics.jsonl, checkpoints and, at the end,
    model.safetensors. Returns one dict of mean losses per epoch trained in this call.
    """
    if epochs < 0 or batch_size < 1 or lr <= 0:
        raise UserError("need epochs >= 0, batch_size >= 1 and lr > 0")
    device = resolve_device(device)
    model.to(device).train()
    X = X.to(device)
    y = y.to(device) if y is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    run_dir = Path(run_dir) if run_dir is not None else None
    start, best = 0, math.inf
    if run_dir is not None:
        ckpt = run_dir / "checkpoint" / "last.pt"
        if resume and ckpt.exists():
            start, best = _load_checkpoint(ckpt, model, optimizer, device)
            _truncate_metrics(run_dir / "metrics.jsonl", start)
        elif resume:
            raise UserError(f"nothing to resume in {run_dir}: no checkpoint/last.pt")
        elif (run_dir / "metrics.jsonl").exists():
            raise UserError(f"{run_dir} already holds a run: pass --resume to continue it, or choose a new --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        if config is not None:
            write_yaml(run_dir / "config.yaml", config)

    n = len(X)
    steps_per_epoch = math.ceil(n / batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=(epochs - start) * steps_per_epoch, desc=type(model).__name__, unit="step",
                   dynamic_ncols=True, mininterval=1.0)
    history = []
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(n, device=device)
        if hasattr(model, "on_epoch_start"):
            model.on_epoch_start(epoch, epochs)
        sums: dict[str, torch.Tensor] = {}
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            losses = model.loss(X[idx], None if y is None else y[idx])
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            for k, v in losses.items():       # summed as tensors: no device sync per step
                sums[k] = sums.get(k, 0) + v.detach() * len(idx)
            if bar is not None:
                bar.update(1)
        record = {"epoch": epoch + 1, **{k: float(v) / n for k, v in sums.items()},
                  "seconds": round(time.perf_counter() - t0, 3)}
        if not math.isfinite(record["loss"]):
            raise UserError(f"the loss became {record['loss']} in epoch {epoch + 1}: lower --lr or check the data")
        history.append(record)
        if bar is not None:
            bar.set_postfix(epoch=epoch + 1, loss=f"{record['loss']:.4g}")
        if run_dir is not None:
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            best_now = record["loss"] < best
            best = min(best, record["loss"])
            _save_checkpoint(run_dir / "checkpoint" / "last.pt", model, optimizer, epoch + 1, best)
            if best_now:
                _save_checkpoint(run_dir / "checkpoint" / "best.pt", model, optimizer, epoch + 1, best)
    if bar is not None:
        bar.close()
    model.eval()
    if run_dir is not None:
        save_weights(model, run_dir / "model.safetensors")
    return history


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drop metric lines of epochs after the checkpoint (a run killed mid-epoch may have written none)."""
    if not path.exists():
        return
    lines = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["epoch"] <= epochs_done]
    atomic_write(path, lambda f: f.write("".join(l + "\n" for l in lines).encode()))
