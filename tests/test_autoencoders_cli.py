"""The autoencoder zoo from the command line (issue 9): training on digits, bad values ending with exit 2
and one line before any work, the reproductions' flags checked."""

import pytest

from robustrep.cli import main


def _run(args, capsys):
    try:
        code = main(args)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "k-sparse-ae", "--dataset", "digits", "--k", "2000", "--out", "{tmp}/r"], "k must be at most"),
        (["train", "dae", "--dataset", "digits", "--sigma", "-0.5", "--out", "{tmp}/r"], "sigma"),
        (["train", "dae", "--dataset", "digits", "--sigma", "nan", "--out", "{tmp}/r"], "sigma"),
        (["train", "dae", "--dataset", "digits", "--noise", "masking", "--sigma", "1.5", "--out", "{tmp}/r"], "sigma"),
        (["train", "pca", "--dataset", "digits", "--latent-dim", "65", "--out", "{tmp}/r"], "at most the 64 pixels"),
        (["train", "ae", "--dataset", "digits", "--hidden", "100,x", "--out", "{tmp}/r"], "hidden"),
        (["train", "sparse-ae", "--dataset", "digits", "--rho", "1.0", "--out", "{tmp}/r"], "rho"),
        (["train", "wae-mmd", "--dataset", "digits", "--kernel", "cubic", "--out", "{tmp}/r"], "kernel"),
        (["train", "info-vae", "--dataset", "digits", "--alpha", "3", "--out", "{tmp}/r"], "alpha"),
        (["reproduce", "autoencoders", "--ae-epochs", "-1", "--out", "{tmp}/r"], "--ae-epochs"),
        (["reproduce", "autoencoders", "--dae-sigma", "0", "--out", "{tmp}/r"], "--dae-sigma"),
        (["reproduce", "autoencoders", "--ae2-epochs", "-1", "--out", "{tmp}/r"], "--ae2-epochs"),
        (["reproduce", "autoencoders", "--linear-epochs", "-3", "--out", "{tmp}/r"], "--linear-epochs"),
        (["reproduce", "autoencoders", "--probe-l2", "-1", "--out", "{tmp}/r"], "--probe-l2"),
        (["reproduce", "autoencoders", "--probe-l2", "nan", "--out", "{tmp}/r"], "--probe-l2"),
        (["reproduce", "autoencoders", "--probe-l2", "inf", "--out", "{tmp}/r"], "--probe-l2"),
        (["reproduce", "disentanglement", "--betas", "1,x", "--out", "{tmp}/r"], "--betas"),
        (["reproduce", "disentanglement", "--betas", "1,-4", "--out", "{tmp}/r"], "--betas"),
        (["reproduce", "disentanglement", "--grid", "huge", "--out", "{tmp}/r"], "--grid"),
        (["reproduce", "disentanglement", "--seeds", "0", "--out", "{tmp}/r"], "--seeds"),
        (["reproduce", "disentanglement", "--likelihood", "poisson", "--out", "{tmp}/r"], "--likelihood"),
        (["reproduce", "disentanglement", "--arch", "mlp", "--out", "{tmp}/r"], "--arch"),
        (["reproduce", "disentanglement", "--lr", "0", "--out", "{tmp}/r"], "--lr"),
        (["reproduce", "disentanglement", "--hidden", "0", "--out", "{tmp}/r"], "--hidden"),
        (["train", "vae", "--dataset", "digits", "--likelihood", "laplace", "--out", "{tmp}/r"], "likelihood"),
        (["reproduce", "disentanglement", "--seeds", "-2", "--out", "{tmp}/r"], "--seeds"),
        (["reproduce", "discrete-toy", "--gamma", "-1", "--out", "{tmp}/r"], "--gamma"),
        (["reproduce", "discrete-toy", "--radius", "30", "--nx", "40", "--out", "{tmp}/r"], "--radius"),
    ],
)
def test_bad_values_exit_2_with_one_line(tmp_path, args, needle, capsys):
    code, err = _run([a.format(tmp=tmp_path) for a in args], capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "r").exists()  # refused before any work


@pytest.mark.parametrize("name", ["pca", "k-sparse-ae", "wae-gan"])
def test_train_from_the_command_line(tmp_path, name, capsys):
    extra = {
        "pca": ["--latent-dim", "5"],
        "k-sparse-ae": ["--latent-dim", "100", "--k", "5", "--k-start", "20"],
        "wae-gan": ["--hidden", "32", "--disc-hidden", "16"],
    }[name]
    code = main(
        ["train", name, "--dataset", "digits", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r"), *extra]
    )
    assert code == 0
    assert (tmp_path / "r" / "model.safetensors").exists()
