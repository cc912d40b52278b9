"""Figures for attacks (matplotlib, Agg backend): adversarial examples, transfer matrices, universal
perturbations. Each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..plots import save_figure  # noqa: E402


def _image(ax, img: torch.Tensor, signed: bool = False) -> None:
    img = img.detach().cpu().float()
    if signed:  # a perturbation: 0 is grey, +-max(|d|) the extremes
        scale = float(img.abs().max()) or 1.0
        img = 0.5 + 0.5 * img / scale
    img = img.clamp(0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray" if not signed else "RdBu_r", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0))
    ax.set_xticks([])
    ax.set_yticks([])


def plot_examples(x, x_adv, y, pred_clean, pred_adv, path, title: str = "", n: int = 8) -> Path:
    """Three rows: originals (true / predicted label), perturbations (rescaled, red +, blue -),
    adversarials (predicted label, red when it differs from the truth)."""
    n = min(n, len(x))
    fig, axes = plt.subplots(3, max(n, 1), figsize=(1.4 * max(n, 1), 4.6), squeeze=False)
    for i in range(n):
        _image(axes[0, i], x[i])
        axes[0, i].set_title(f"y={int(y[i])} pred={int(pred_clean[i])}", fontsize=7)
        _image(axes[1, i], x_adv[i] - x[i], signed=True)
        axes[1, i].set_title(f"|d|2={float((x_adv[i] - x[i]).norm()):.2f}", fontsize=7)
        _image(axes[2, i], x_adv[i])
        wrong = int(pred_adv[i]) != int(y[i])
        axes[2, i].set_title(f"pred={int(pred_adv[i])}", fontsize=7, color="red" if wrong else "black")
    for row, label in enumerate(("original", "perturbation", "adversarial")):
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return Path(path)


def plot_transfer(result: dict, path, title: str = "") -> Path:
    """Heat map of `transfer_matrix`'s accuracies: rows source models, columns target models."""
    names, acc = result["names"], torch.tensor(result["accuracy"])
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.0 * len(names) + 1.5))
    im = ax.imshow(100 * acc, cmap="viridis", vmin=0, vmax=100)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{100 * acc[i, j]:.1f}",
                ha="center",
                va="center",
                color="white" if acc[i, j] < 0.5 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("crafted on")
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return Path(path)


def plot_universal(v, x, pred_clean, pred_adv, path, title: str = "", n: int = 6) -> Path:
    """The universal perturbation (left) and a few images with it added, labels before -> after."""
    n = min(n, len(x))
    fig, axes = plt.subplots(1, n + 1, figsize=(1.6 * (n + 1), 2.2), squeeze=False)
    _image(axes[0, 0], v[0], signed=True)
    axes[0, 0].set_title("v", fontsize=8)
    for i in range(n):
        _image(axes[0, i + 1], (x[i] + v[0]).clamp(0, 1))
        changed = int(pred_clean[i]) != int(pred_adv[i])
        axes[0, i + 1].set_title(
            f"{int(pred_clean[i])} -> {int(pred_adv[i])}", fontsize=8, color="red" if changed else "black"
        )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return Path(path)
