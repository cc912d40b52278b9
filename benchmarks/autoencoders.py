"""Our autoencoders against their pythae twins (pythae 0.1.2, `pip install robustrep[bench]`), side by
side in one process: the same MNIST subset, the same encoder/decoder modules (ours, handed to pythae as
its custom encoder and decoder), the same loss settings, batch size, learning rate and epochs.

  time per epoch: our `rr.training.fit` against pythae's `TrainingPipeline` (each as a user runs it);
  final test loss: both trained models scored by the SAME function, our model's loss on the test images
  (pythae's weights are loaded into our model: the modules are the same), mean over 5 noise draws.

Ratios ours / pythae (<= 1 is ours faster or better) go to benchmarks/results/autoencoders.json.

    python benchmarks/autoencoders.py [--quick] [--threads 1] [--out benchmarks/results/autoencoders.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
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
    }


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


@torch.no_grad()
def test_loss(model: nn.Module, X: torch.Tensor, draws: int = 5) -> float:
    model.eval()
    values = []
    for d in range(draws):
        torch.manual_seed(1000 + d)
        values.append(float(model.loss(X)["loss"]))
    return sum(values) / draws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5000 training images, 2 epochs (default 20000, 5)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--out", default="benchmarks/results/autoencoders.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

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
    for name, (hparams, cls, config_cls, extra) in twins().items():
        torch.manual_seed(0)
        ours = rr.models.build(name, **hparams)
        twin_start = copy.deepcopy(ours)
        t0 = time.perf_counter()
        fit(ours, X, epochs=epochs, batch_size=batch, lr=lr, seed=0, progress=False)
        ours_epoch = (time.perf_counter() - t0) / epochs

        torch.manual_seed(0)
        encoder, decoder = pythae_modules(twin_start)
        config = config_cls(input_dim=(1, 28, 28), latent_dim=LATENT, **extra)
        theirs = cls(model_config=config, encoder=encoder, decoder=decoder)
        with tempfile.TemporaryDirectory() as tmp:
            tc = BaseTrainerConfig(
                output_dir=tmp,
                num_epochs=epochs,
                learning_rate=lr,
                per_device_train_batch_size=batch,
                per_device_eval_batch_size=batch,
                no_cuda=True,
                optimizer_cls="Adam",
                seed=0,
            )
            t0 = time.perf_counter()
            TrainingPipeline(model=theirs, training_config=tc)(train_data=X, eval_data=None)
            theirs_epoch = (time.perf_counter() - t0) / epochs
        scored = copy.deepcopy(twin_start)
        scored.encoder.load_state_dict(theirs.encoder.body.state_dict())
        scored.decoder.load_state_dict(theirs.decoder.body.state_dict())
        ours_loss, theirs_loss = test_loss(ours, Xt), test_loss(scored, Xt)
        rows[name] = {
            "pythae": cls.__name__,
            "ours_epoch_seconds": round(ours_epoch, 3),
            "pythae_epoch_seconds": round(theirs_epoch, 3),
            "epoch_time_ratio": round(ours_epoch / theirs_epoch, 3),
            "ours_test_loss": round(ours_loss, 3),
            "pythae_test_loss": round(theirs_loss, 3),
            "test_loss_difference": round(ours_loss - theirs_loss, 3),
        }
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
            "batch_size": batch,
            "lr": lr,
            "latent_dim": LATENT,
            "architecture": "mlp 4x200 ReLU (AE: the same widths)",
        },
        "models": rows,
        "seconds": round(time.perf_counter() - t_all, 1),
        "note": "loss differences are in the units of our loss (negative: ours lower); time ratios < 1: ours faster",
    }
    atomic_write(Path(args.out), lambda f: f.write(json.dumps(results, indent=2).encode()))


if __name__ == "__main__":
    main()
