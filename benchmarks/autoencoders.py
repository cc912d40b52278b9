"""Our autoencoders against their pythae twins (pythae 0.1.2, `pip install robustrep[bench]`), side by
side in one process: the same MNIST subset, the same encoder/decoder modules (ours, handed to pythae as
its custom encoder and decoder), the same loss settings, batch size, learning rate and epochs.

  time per epoch: our `rr.training.fit` against pythae's `TrainingPipeline` (each as a user runs it);
  final test loss: both trained models scored by the SAME function, our model's loss on the test images
  (pythae's weights are loaded into our model: the modules are the same), mean over 5 noise draws.

Ratios ours / pythae (<= 1 is ours faster or better) go to benchmarks/results/autoencoders.json.
With --seeds K both sides are trained from K seeds (0 .. K-1: initial weights, batch order, noise), and
each side's final test loss is reported as its mean and sample standard deviation over the seeds: a loss
difference smaller than that spread is one training trajectory against another, not a different loss.

    python benchmarks/autoencoders.py [--quick] [--threads 1] [--models info-vae] [--seeds 5]
                                      [--out benchmarks/results/autoencoders.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import robustrep as rr
from robustrep.training import fit
from robustrep.utils import atomic_write

# our registered model and hyper-parameters -> pythae's model and config fields with the same meaning
LATENT = 8


def twins():
    from pythae import models as pm

    common = dict(input_shape=[1, 28, 28], latent_dim=LATENT)
    return {
        "ae": (dict(common, hidden="200,200,200,200", activation="relu", loss="mse"), pm.AE, pm.AEConfig, {}),
        # pythae's VAE with mse is our Gaussian decoder with v = 1 (0.5 ||x - g||^2 + KL, up to a constant)
        "vae": (dict(common, obs_var=1.0), pm.VAE, pm.VAEConfig, dict(reconstruction_loss="mse")),
        "beta-vae": (
            dict(common, obs_var=1.0, beta=4.0),
            pm.BetaVAE,
            pm.BetaVAEConfig,
            dict(reconstruction_loss="mse", beta=4.0),
        ),
        "info-vae": (
            dict(common, obs_var=1.0, alpha=0.0, lam=10.0, kernel="imq", bandwidth=1.0),
            pm.INFOVAE_MMD,
            pm.INFOVAE_MMD_Config,
            dict(reconstruction_loss="mse", alpha=0.0, lbd=10.0, kernel_choice="imq", kernel_bandwidth=1.0),
        ),
        "wae-mmd": (
            dict(common, lam=10.0, kernel="imq", bandwidth=1.0),
            pm.WAE_MMD,
            pm.WAE_MMD_Config,
            dict(reg_weight=10.0, kernel_choice="imq", kernel_bandwidth=1.0),
        ),
        # pythae's autoencoder loss 0.5 ||x - g||^2 + 0.5 BCE(D(z), 1) is half of ours at weight 1 (Adam is
        # scale-free); both discriminators tell N(0, I) draws (1) from codes (0) with the same BCE
        "aae": (
            dict(common, weight=1.0),
            pm.Adversarial_AE,
            pm.Adversarial_AE_Config,
            dict(reconstruction_loss="mse", adversarial_loss_scale=0.5),
        ),
    }


# trained by pythae's AdversarialTrainer with our discriminator; scored on the reconstruction term alone (each
# side's full loss holds its own discriminator's opinion, which says nothing about the other side)
ADVERSARIAL = ("aae",)


def score_key(name: str) -> str:
    """The term of our loss both trained models are scored on."""
    return "recon" if name in ADVERSARIAL else "loss"


def pythae_modules(ours: nn.Module):
    """Our encoder and decoder wrapped in pythae's BaseEncoder/BaseDecoder (copies: the twin trains its own)."""
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            out = self.body(x)
            if isinstance(out, tuple):  # a Gaussian head: (mu, var)
                return ModelOutput(embedding=out[0], log_covariance=out[1].log())
            return ModelOutput(embedding=out)

    class Decoder(BaseDecoder):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, z):
            return ModelOutput(reconstruction=self.body(z))

    return Encoder(copy.deepcopy(ours.encoder)), Decoder(copy.deepcopy(ours.decoder))


def pythae_discriminator(ours: nn.Module):
    """Our code discriminator (it returns logits) as pythae's BaseDiscriminator (it returns D's probability)."""
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDiscriminator

    class Discriminator(BaseDiscriminator):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, z):
            return ModelOutput(embedding=torch.sigmoid(self.body(z)))

    return Discriminator(copy.deepcopy(ours.discriminator))


def parse_models(text: str) -> list[str]:
    """Comma-separated model names, each one with a pythae twin here (checked before any work)."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    known = ("ae", "vae", "beta-vae", "info-vae", "wae-mmd", "aae")
    bad = [n for n in names if n not in known]
    if not names or bad:
        raise rr.errors.UserError(f"--models takes names from {', '.join(known)}, got {text!r}")
    return names


def spread(values: list[float]) -> dict:
    """Mean and sample standard deviation (0 for one value) of per-seed numbers, rounded to 3 places."""
    t = torch.tensor(values, dtype=torch.float64)
    std = float(t.std()) if len(values) > 1 else 0.0
    return {"mean": round(float(t.mean()), 3), "std": round(std, 3), "values": [round(v, 3) for v in values]}


@torch.no_grad()
def test_loss(model: nn.Module, X: torch.Tensor, draws: int = 5, key: str = "loss") -> float:
    model.eval()
    values = []
    for d in range(draws):
        torch.manual_seed(1000 + d)
        values.append(float(model.loss(X)[key]))
    return sum(values) / draws


@torch.no_grad()
def prior_mmd(model: nn.Module, X: torch.Tensor, draws: int = 5) -> float:
    """MMD^2 between the codes of X and as many N(0, I) draws (the WAE's multi-scale IMQ kernel, sigma_z 1):
    how well a prior-matching autoencoder did the other half of its job, mean over `draws` draws."""
    from robustrep.divergences import mmd_squared
    from robustrep.models.info_vae import kernel_settings

    model.eval()
    values = []
    for d in range(draws):
        torch.manual_seed(2000 + d)
        z, _ = model.codes(X)
        scale, scales = kernel_settings("imq", 1.0, z.shape[1])
        values.append(float(mmd_squared(z, torch.randn_like(z), "imq", scale, scales)))
    return sum(values) / draws


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5000 training images, 2 epochs (default 20000, 5)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--out", default="benchmarks/results/autoencoders.json")
    ap.add_argument("--models", default="ae,vae,beta-vae,info-vae,wae-mmd,aae", help="comma-separated (default all)")
    ap.add_argument("--seeds", type=int, default=1, help="train each side from seeds 0 .. K-1 (default 1)")
    args = ap.parse_args(argv)
    try:
        names = parse_models(args.models)
        seeds = rr.validate.positive(args.seeds, "--seeds", integer=True, high=1000)
    except rr.errors.UserError as e:
        ap.error(str(e))
    torch.set_num_threads(args.threads)
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import AdversarialTrainerConfig, BaseTrainerConfig

    n_train, epochs, batch, lr = (5000, 2, 100, 1e-3) if args.quick else (20000, 5, 100, 1e-3)
    X, _ = rr.data.load("mnist", "train")
    Xt, _ = rr.data.load("mnist", "test")
    X, _ = rr.data.random_subset(X, None, n_train, 0)
    Xt = Xt[:2000]
    rows = {}
    t_all = time.perf_counter()
    # warm-up: the first fit in a process pays for lazy imports and allocator growth; neither side should
    fit(rr.models.build("vae", input_shape=[1, 28, 28], latent_dim=LATENT), X[:200], epochs=1, progress=False)
    warm = rr.models.build("vae", input_shape=[1, 28, 28], latent_dim=LATENT)
    with tempfile.TemporaryDirectory() as tmp:
        enc, dec = pythae_modules(warm)
        TrainingPipeline(
            model=twins()["vae"][1](
                model_config=twins()["vae"][2](input_dim=(1, 28, 28), latent_dim=LATENT), encoder=enc, decoder=dec
            ),
            training_config=BaseTrainerConfig(output_dir=tmp, num_epochs=1, no_cuda=True),
        )(train_data=X[:200], eval_data=None)
    for name in names:
        hparams, cls, config_cls, extra = twins()[name]
        ours_epochs, theirs_epochs, ours_losses, theirs_losses = [], [], [], []
        ours_mmd, theirs_mmd = [], []
        for seed in range(seeds):
            torch.manual_seed(seed)
            ours = rr.models.build(name, **hparams)
            twin_start = copy.deepcopy(ours)
            t0 = time.perf_counter()
            fit(ours, X, epochs=epochs, batch_size=batch, lr=lr, seed=seed, progress=False)
            ours_epochs.append((time.perf_counter() - t0) / epochs)

            torch.manual_seed(seed)
            encoder, decoder = pythae_modules(twin_start)
            config = config_cls(input_dim=(1, 28, 28), latent_dim=LATENT, **extra)
            common = dict(
                num_epochs=epochs,
                per_device_train_batch_size=batch,
                per_device_eval_batch_size=batch,
                no_cuda=True,
                seed=seed,
            )
            extra_modules = {"discriminator": pythae_discriminator(twin_start)} if name in ADVERSARIAL else {}
            theirs = cls(model_config=config, encoder=encoder, decoder=decoder, **extra_modules)
            with tempfile.TemporaryDirectory() as tmp:
                if name in ADVERSARIAL:  # our optimisers: Adam lr for the autoencoder, Adam (0.5, 0.999) disc_lr
                    tc = AdversarialTrainerConfig(
                        output_dir=tmp,
                        autoencoder_learning_rate=lr,
                        discriminator_learning_rate=twin_start.disc_lr,
                        autoencoder_optimizer_cls="Adam",
                        discriminator_optimizer_cls="Adam",
                        discriminator_optimizer_params={"betas": (0.5, 0.999)},
                        **common,
                    )
                else:
                    tc = BaseTrainerConfig(output_dir=tmp, learning_rate=lr, optimizer_cls="Adam", **common)
                t0 = time.perf_counter()
                TrainingPipeline(model=theirs, training_config=tc)(train_data=X, eval_data=None)
                theirs_epochs.append((time.perf_counter() - t0) / epochs)
            scored = copy.deepcopy(twin_start)
            scored.encoder.load_state_dict(theirs.encoder.body.state_dict())
            scored.decoder.load_state_dict(theirs.decoder.body.state_dict())
            if name in ADVERSARIAL:
                scored.discriminator.load_state_dict(theirs.discriminator.body.state_dict())
                ours_mmd.append(prior_mmd(ours, Xt))
                theirs_mmd.append(prior_mmd(scored, Xt))
            ours_losses.append(test_loss(ours, Xt, key=score_key(name)))
            theirs_losses.append(test_loss(scored, Xt, key=score_key(name)))
        ours_epoch, theirs_epoch = sum(ours_epochs) / seeds, sum(theirs_epochs) / seeds
        ours_loss, theirs_loss = sum(ours_losses) / seeds, sum(theirs_losses) / seeds
        rows[name] = {
            "pythae": cls.__name__,
            "scored_on": score_key(name),
            "ours_epoch_seconds": round(ours_epoch, 3),
            "pythae_epoch_seconds": round(theirs_epoch, 3),
            "epoch_time_ratio": round(ours_epoch / theirs_epoch, 3),
            "ours_test_loss": round(ours_loss, 3),
            "pythae_test_loss": round(theirs_loss, 3),
            "test_loss_difference": round(ours_loss - theirs_loss, 3),
        }
        if ours_mmd:  # the prior match the adversarial term buys, on the same codes' function for both
            rows[name] |= {
                "ours_prior_mmd": round(sum(ours_mmd) / seeds, 5),
                "pythae_prior_mmd": round(sum(theirs_mmd) / seeds, 5),
            }
        if seeds > 1:  # per seed, and each side's spread over seeds
            rows[name] |= {"ours_test_loss_seeds": spread(ours_losses), "pythae_test_loss_seeds": spread(theirs_losses)}
        print(name, rows[name], flush=True)

    from importlib.metadata import version

    results = {
        "benchmark": "autoencoders vs pythae twins",
        "pythae_version": version("pythae"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "settings": {
            "n_train": n_train,
            "n_test": len(Xt),
            "epochs": epochs,
            "seeds": seeds,
            "batch_size": batch,
            "lr": lr,
            "latent_dim": LATENT,
            "architecture": "mlp 4x200 ReLU (AE: the same widths)",
        },
        "models": rows,
        "seconds": round(time.perf_counter() - t_all, 1),
        "note": "loss differences are in the units of our loss (negative: ours lower); time ratios < 1: ours faster",
        "command": shlex.join(["python", "benchmarks/autoencoders.py", *(sys.argv[1:] if argv is None else argv)]),
    }
    atomic_write(Path(args.out), lambda f: f.write(json.dumps(results, indent=2).encode()))


if __name__ == "__main__":
    main()
