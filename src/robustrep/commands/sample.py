"""`robustrep sample RUN`: images drawn from a trained generative model, as one grid picture."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save

from .. import plots, validate
from ..errors import UserError
from ..options import add_common_options
from ..runs import load_model
from ..utils import atomic_write, resolve_device


def register(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="draw images from a trained generative model into a grid PNG",
        description="Draw --n images from the model of RUN (its sample(n) method: a VAE decodes prior draws, a "
        "GAN maps noise, a diffusion model runs its sampler) and save them as one grid picture, and the "
        "images themselves as samples.safetensors beside it.",
    )
    p.add_argument("run", help="a run folder written by `robustrep train` for a generative model")
    p.add_argument("--n", type=int, default=64, help="images to draw (default 64)")
    p.add_argument("--out", default=None, help="the PNG to write (default RUN/samples.png)")
    p.add_argument("--ema", action="store_true", help="use the moving average of the weights (--ema-decay runs)")
    add_common_options(p)
    p.set_defaults(func=sample)


def sample(args) -> int:
    n = validate.positive(args.n, "--n", integer=True, high=100_000)
    seed = validate.seed(args.seed)
    out = Path(args.out) if args.out else Path(args.run) / "samples.png"
    validate.output_file(out, "--out")
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got {out}")
    device = resolve_device(args.device)
    model = load_model(args.run, device, ema=args.ema)
    if not hasattr(model, "sample"):
        raise UserError(f"the {type(model).__name__} of {args.run} is not a generative model: it has no sample()")
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.inference_mode():
        images = model.sample(n, generator=generator)
    plots.image_grid(images, out, title=f"{n} samples of {Path(args.run).name} (seed {seed})")
    tensors = {"images": images.cpu().contiguous()}
    atomic_write(out.with_suffix(".safetensors"), lambda f: f.write(save(tensors)))
    print(f"wrote {out} and {out.with_suffix('.safetensors')}")
    return 0
