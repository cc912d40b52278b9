"""The training loop: resume after a kill ends exactly where the uninterrupted run ends."""

import json

import pytest
import torch

import robustrep as rr
from robustrep.training import fit


class Killed(Exception):
    pass


def _se():
    return rr.models.SmoothEncoder(input_shape=(1, 8, 8), latent_dim=4, hidden=32, select_steps=2, gamma=2.0)


def test_resume_after_a_kill_equals_the_uninterrupted_run(tmp_path, digits):
    X = digits[0][:256]
    torch.manual_seed(0)
    straight = _se()
    h_straight = fit(straight, X, epochs=4, batch_size=64, run_dir=tmp_path / "a", seed=3, progress=False)

    torch.manual_seed(0)
    killed = _se()

    def die(epoch, epochs):
        if epoch == 2:
            raise Killed

    killed.on_epoch_start = die
    with pytest.raises(Killed):
        fit(killed, X, epochs=4, batch_size=64, run_dir=tmp_path / "b", seed=3, progress=False)
    assert not (tmp_path / "b" / "model.safetensors").exists()

    resumed = _se()  # a fresh process would rebuild the model like this
    h_resumed = fit(resumed, X, epochs=4, batch_size=64, run_dir=tmp_path / "b", seed=3, progress=False, resume=True)
    assert [h["epoch"] for h in h_resumed] == [1, 2, 3, 4]  # the whole history, resumed parts included
    assert h_resumed[-1]["loss"] == pytest.approx(h_straight[-1]["loss"], rel=1e-6)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)
    lines = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]


def test_run_folder_contents_and_reload(tmp_path, digits):
    X = digits[0][:128]
    model = rr.models.VAE(input_shape=(1, 8, 8), latent_dim=3, hidden=16)
    fit(
        model,
        X,
        epochs=2,
        batch_size=32,
        run_dir=tmp_path,
        progress=False,
        config={"model": "vae", "hparams": {"input_shape": [1, 8, 8], "latent_dim": 3, "hidden": 16}},
    )
    for name in ("config.yaml", "model.safetensors", "metrics.jsonl", "checkpoint/last.pt", "checkpoint/best.pt"):
        assert (tmp_path / name).exists(), name
    again = rr.runs.load_model(tmp_path)
    for p, q in zip(model.parameters(), again.parameters()):
        torch.testing.assert_close(p.cpu(), q)


def test_training_reduces_the_loss(digits):
    model = rr.models.VAE(input_shape=(1, 8, 8), latent_dim=4, hidden=64, obs_var=0.1)
    history = fit(model, digits[0], epochs=5, batch_size=64, progress=False)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(tmp_path, digits):
    X = digits[0][:64]
    fit(rr.models.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=8), X, epochs=1, run_dir=tmp_path, progress=False)
    with pytest.raises(rr.UserError, match="resume"):
        fit(rr.models.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=8), X, epochs=1, run_dir=tmp_path, progress=False)
    with pytest.raises(rr.UserError, match="nothing to resume"):
        fit(
            rr.models.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=8),
            X,
            epochs=1,
            run_dir=tmp_path / "new",
            progress=False,
            resume=True,
        )


def test_corrupt_checkpoint_is_a_user_error(tmp_path, digits):
    X = digits[0][:64]
    fit(rr.models.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=8), X, epochs=1, run_dir=tmp_path, progress=False)
    (tmp_path / "checkpoint" / "last.pt").write_bytes(b"garbage")
    with pytest.raises(rr.UserError, match="corrupt"):
        fit(
            rr.models.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=8),
            X,
            epochs=2,
            run_dir=tmp_path,
            progress=False,
            resume=True,
        )


def test_fit_equals_the_plain_loop_it_stands_for(digits):
    """The loop's hooks, phases and schedules change nothing for a one-optimiser model: the weights equal,
    bit for bit, those of the plain loop with the same seeding protocol (so results made before the
    protocol are reproduced; issue 7)."""
    from robustrep.training import epoch_seed

    X = digits[0][:300]

    def model():
        torch.manual_seed(1)
        return rr.models.VAE(input_shape=(1, 8, 8), latent_dim=3, hidden=16)

    ours = model()
    fit(ours, X, epochs=3, batch_size=64, seed=7, progress=False)
    plain = model()
    opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    for epoch in range(3):
        torch.manual_seed(epoch_seed(7, epoch))
        order = torch.randperm(len(X))
        for i in range(0, len(X), 64):
            loss = plain.loss(X[order[i : i + 64]])["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    for p, q in zip(ours.parameters(), plain.parameters()):
        assert torch.equal(p, q)


def test_fit_or_reuse_trains_once_reuses_and_refuses_other_settings(tmp_path, digits):
    from robustrep.errors import UserError
    from robustrep.training import fit_or_reuse

    X = digits[0][:64]
    config = {"model": "vae", "hparams": {"latent_dim": 2}, "training": {"epochs": 1}}
    build = lambda: rr.models.build("vae", input_shape=[1, 8, 8], latent_dim=2, hidden=16)  # noqa: E731
    trained, seconds = fit_or_reuse(build(), X, run_dir=tmp_path, config=config, device="cpu", epochs=1, progress=False)
    assert not trained.training and (tmp_path / "model.safetensors").exists()
    reused, again = fit_or_reuse(build(), X, run_dir=tmp_path, config=config, device="cpu", epochs=1, progress=False)
    assert again == seconds  # read from the folder's metrics, not trained again
    for a, b in zip(trained.state_dict().values(), reused.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = dict(config, hparams={"latent_dim": 3})
    with pytest.raises(UserError, match="holds a vae trained with other settings"):
        fit_or_reuse(build(), X, run_dir=tmp_path, config=other, device="cpu", epochs=1, progress=False)
