"""Figures (matplotlib, Agg backend: no screen needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .utils import atomic_write  # noqa: E402

COLORS = {"vae": "tab:blue", "se": "tab:red", "se-random": "tab:orange"}


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Save a figure through atomic_write (never half a PNG; only rank 0 under torchrun) and close it."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return Path(path)


def robustness_series(results: dict) -> list[tuple[str, str, list[float], list[float]]]:
    """(model, label, radii, accuracy in %) per line of robustness_curve: each model's accuracy under its
    first attack, then under each later attack of `by_attack` (e.g. the ensemble on the points PGD left)."""
    series = []
    for name, r in results["models"].items():
        later = list(r.get("by_attack", {}).items())[1:]  # the first attack's numbers are r["adversarial"]
        lines = [(name.upper(), r["adversarial"])] + [(f"{name.upper()}, then {a}", acc) for a, acc in later]
        for label, accuracy in lines:
            radii = sorted(accuracy, key=float)
            series.append((name, label, [float(e) for e in radii], [100 * accuracy[e] for e in radii]))
    return series


def robustness_curve(results: dict, path: Path, title: str = "") -> Path:
    """Adversarial accuracy against attack radius, one line per model (a dotted one per later attack),
    nominal accuracy dashed (Cemgil et al. 2020, Figure 5)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    colors = {name: COLORS.get(name, f"C{i}") for i, name in enumerate(results["models"])}
    for name, label, radii, accuracy in robustness_series(results):
        ax.plot(radii, accuracy, "o-" if label == name.upper() else "s:", color=colors[name], label=label)
    for name, r in results["models"].items():
        ax.axhline(100 * r["nominal"], ls="--", color=colors[name], lw=1, label=f"{name.upper()} nominal")
    ax.set_xlabel("attack radius (l_inf)")
    ax.set_ylabel("adversarial accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return Path(path)


def _show(ax, img: torch.Tensor) -> None:
    img = img.detach().cpu().clamp(0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0))
    ax.set_xticks([])
    ax.set_yticks([])


def attacked_examples(rows: dict[str, dict[str, torch.Tensor]], path: Path, title: str = "") -> Path:
    """For each model, columns of x, g(f(x)), x + d, g(f(x + d)) (Cemgil et al. 2020, Figure 1).
    `rows[name]` holds tensors "x", "recon", "x_adv", "recon_adv" [K, C, H, W] and optional
    "pred", "pred_adv" labels."""
    names = list(rows)
    k = len(rows[names[0]]["x"])
    labels = ["x", "g(f(x))", "x + d", "g(f(x + d))"]
    keys = ["x", "recon", "x_adv", "recon_adv"]
    fig, axes = plt.subplots(4 * len(names), k, figsize=(1.1 * k, 1.15 * 4 * len(names)), squeeze=False)
    for m, name in enumerate(names):
        for r, key in enumerate(keys):
            for j in range(k):
                ax = axes[4 * m + r, j]
                _show(ax, rows[name][key][j])
                pred_key = {"x": "pred", "x_adv": "pred_adv"}.get(key)
                if pred_key and pred_key in rows[name]:
                    ax.set_title(str(int(rows[name][pred_key][j])), fontsize=7, pad=1)
            axes[4 * m + r, 0].set_ylabel(f"{name.upper()}\n{labels[r]}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return Path(path)


def image_grid(images: torch.Tensor, path: Path, title: str = "", columns: int | None = None) -> Path:
    """Images [N, C, H, W] in [0, 1] tiled into one picture, `columns` wide (default about sqrt(N))."""
    images = images.detach().cpu().clamp(0, 1)
    n, c, h, w = images.shape
    columns = columns or max(1, round(n**0.5))
    rows = -(-n // columns)
    canvas = torch.ones(c, rows * (h + 1) + 1, columns * (w + 1) + 1)
    for i, img in enumerate(images):
        r, k = divmod(i, columns)
        canvas[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (w + 1) : 1 + k * (w + 1) + w] = img
    fig, ax = plt.subplots(
        figsize=(min(12, 0.5 + 0.3 * columns * max(1, w / 8)), min(12, 0.7 + 0.3 * rows * max(1, h / 8)))
    )
    _show(ax, canvas)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return Path(path)
