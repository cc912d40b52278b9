"""`robustrep probe RUN`: fit the linear probe on a trained encoder's frozen posterior means."""

from __future__ import annotations

from pathlib import Path

from .. import data, preflight
from ..errors import UserError
from ..evaluation import clean_accuracy
from ..evaluation.probe import ProbedEncoder, save_probe, train_probe
from ..runs import load_model
from ..utils import resolve_device, seed_everything


def register(sub) -> None:
    from ..options import add_common_options

    p = sub.add_parser(
        "probe",
        help="fit a linear probe on a trained encoder",
        description="Freeze the run's encoder, fit a linear classifier on the posterior mean "
        "mu(x) of the training set (plain cross-entropy, L-BFGS), report train/test accuracy, "
        "and save it in the run folder (probe.safetensors, probe.yaml).",
    )
    p.add_argument("run", help="a run folder written by `robustrep train`")
    p.add_argument("--task", default=None, help="label task (color-mnist: digit|color; default the data set's first)")
    p.add_argument("--dataset", default=None, help="data set to probe on (default the one the encoder was trained on)")
    add_common_options(p)
    p.set_defaults(func=probe)


def probe(args) -> int:
    # the run, the data set, the task and the output files checked before any work
    config = preflight.run_config(args.run)
    if not preflight.is_encoder(config):
        raise UserError(
            f"{args.run} holds a {config['model']}, not an encoder: a linear probe needs an encoder run "
            "(attack or evaluate a classifier run directly)"
        )
    dataset = args.dataset or config["training"]["dataset"]
    data.num_classes(dataset, args.task)  # an unknown data set or task fails here
    for name in ("probe.safetensors", "probe.yaml"):
        preflight.writable(Path(args.run) / name)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    model = load_model(args.run, device)
    X, y = data.load(dataset, "train", task=args.task, device=device)
    preflight.data_fit(X, config, dataset)
    Xt, yt = data.load(dataset, "test", task=args.task, device=device)
    probe = train_probe(model, X, y, data.num_classes(dataset, args.task))
    classifier = ProbedEncoder(model, probe)
    accs = {
        "train_accuracy": clean_accuracy(classifier, X[:10000], y[:10000]),  # a slice makes real images
        "test_accuracy": clean_accuracy(classifier, Xt[:10000], yt[:10000]),
    }
    save_probe(args.run, probe, {"dataset": dataset, "task": args.task or data.TASKS[dataset][0], **accs})
    print(f"probe on {dataset}: train accuracy {accs['train_accuracy']:.4f}, test accuracy {accs['test_accuracy']:.4f}")
    return 0
