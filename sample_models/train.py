"""Train a sample model on a real MedMNIST file and save it in every format medaudit reads.

    python sample_models/train.py --dataset pneumoniamnist               # standard training
    python sample_models/train.py --dataset pneumoniamnist --adv         # PGD adversarial training
    python sample_models/train.py --all                                  # every sample model
    python sample_models/train.py --dataset breastmnist --quick --out /tmp/x   # smoke test (one candidate)

Writes ``<out>/<dataset>[_<size>]_<arch>[_adv].pt`` (TorchScript), ``.pt2``
(torch.export), ``.onnx`` and the ``.json`` model card: preprocessing, classes,
training configuration, data checksum, and the test metrics measured by medaudit
itself (clean, and robust at eps 0.004 L-inf with the ``auto`` attack plan).

Seeded and deterministic on the CPU. Model selection uses the validation split
only (never the test split), with one rule for every dataset:

* standard models: a grid of candidates, every seed of ``--seeds`` (default 0,1,2)
  with the class-balanced loss off and on and every learning rate of ``--lrs`` (default
  3e-3,1e-3); each candidate keeps its best epoch and the candidate with the best
  validation score is kept. The score, for epochs and candidates alike, is validation
  accuracy, ties broken by validation AUC, then by lower validation cross-entropy, then
  by the order of the grid (lower seed, loss off first, learning rates in ``--lrs`` order).
  Every candidate and its validation scores go into the card.
* adversarially trained models: one run (``--seed``, learning rate ``--lr``) with the loss
  setting selected for the standard model of the same dataset and size (read from its
  card), keeping the epoch with the best validation PGD-10 accuracy at the training eps.

Adversarial training is Madry's PGD training (L-inf, eps 2/255 by default, 3 steps
of 2.5 eps/3 from a random start: cheap enough for a CPU at this small eps) with the eps ramped up linearly over the first 30%
of the epochs, as in the oncology study's staged ("iterative") schedule.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from medaudit.attacks import run_attacks
from medaudit.attacks.pgd import max_loss_pgd
from medaudit.attacks.plan import build_config
from medaudit.data import AuditData, DataSpec, load_data
from medaudit.evaluate import EvalConfig, evaluate, predict_logits
from medaudit.metrics import classification_metrics
from medaudit.models import InputSpec, bind_model, load_model
from medaudit.models.archs import architectures
from medaudit.models.wrapper import AuditModel, ModelInfo

HERE = Path(__file__).parent
MEAN, STD = 0.5, 0.5
AUDIT_EPS = 0.004
SAMPLES = [  # (dataset, size, epochs); the loss (class-balanced or not) is selected on validation
    ("pneumoniamnist", 28, 12),
    ("breastmnist", 28, 40),
    ("breastmnist", 64, 25),
    ("retinamnist", 28, 40),
]
PROTOCOL = (
    "grid of candidates (every seed x class-balanced loss off/on x learning rate); each keeps "
    "its best epoch; kept: best validation accuracy, ties broken by validation AUC, then lower "
    "validation cross-entropy, then grid order (lower seed, loss off first, learning rates in "
    "the listed order)"
)
ADV_PROTOCOL = (
    "one run with the loss setting selected on validation for the standard model of the same "
    "dataset and size; kept: the epoch with the best validation PGD-10 accuracy at the training eps"
)


def wrap(network: torch.nn.Module, channels: int, size: int) -> AuditModel:
    spec = InputSpec(channels=channels, input_size=size, mean=(MEAN,) * channels, std=(STD,) * channels)
    return AuditModel(network, spec, ModelInfo(path="", format="training", sha256="", parameters=None))


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 1/14 of the side (reflect padding) and horizontal flips."""
    pad = max(1, x.shape[-1] // 14)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    x = padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
    if torch.rand(1, generator=generator).item() < 0.5:
        x = x.flip(-1)
    return x


def pgd_train_examples(
    model: AuditModel, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, generator: torch.Generator
) -> torch.Tensor:
    """Max-loss PGD in eval mode (BatchNorm statistics untouched by the attack)."""
    if eps <= 0:
        return x
    was_training = model.training
    model.eval()
    x_adv = max_loss_pgd(model, x, y, eps=eps, norm="linf", steps=steps, generator=generator)
    model.train(was_training)
    return x_adv


def validation_scores(
    model: AuditModel, val: AuditData, adv_eps: float | None, generator: torch.Generator
) -> dict[str, float]:
    """Validation accuracy, AUC and cross-entropy; with ``adv_eps``, PGD-10 accuracy at that eps."""
    model.eval()
    if adv_eps is None:
        logits = predict_logits(model, val, 512)
        metrics = classification_metrics(logits, val.labels, val.task, val.class_names)
        auc = metrics["auc"]
        return {
            "val_accuracy": float(metrics["accuracy"]),
            "val_auc": float(auc) if auc is not None and auc == auc else float("nan"),
            "val_loss": float(F.cross_entropy(logits, val.labels)),
        }
    x = val.float_images(0, val.n)
    x_adv = pgd_train_examples(model, x, val.labels, adv_eps, 10, generator)
    return {"val_pgd_accuracy": float((model.predict(x_adv).argmax(1) == val.labels).float().mean())}


def selection_key(scores: dict[str, float]) -> tuple[float, ...]:
    """Larger is better: accuracy, then AUC, then lower loss (or PGD accuracy for adversarial runs)."""
    if "val_pgd_accuracy" in scores:
        return (scores["val_pgd_accuracy"],)
    auc = scores["val_auc"]
    return (scores["val_accuracy"], auc if auc == auc else float("-inf"), -scores["val_loss"])


def loss_name(balanced: bool) -> str:
    return "class-balanced cross-entropy" if balanced else "cross-entropy"


def standard_loss(args: argparse.Namespace, dataset: str, size: int) -> bool:
    """The class-balanced setting selected on validation for the standard model (from its card)."""
    name = f"{dataset}{'' if size == 28 else f'_{size}'}_{args.arch}"
    card_path = args.out / f"{name}.json"
    if not card_path.is_file():
        if args.quick:
            return False
        raise SystemExit(f"{card_path} is missing: train the standard model first, or pass --loss")
    training = json.loads(card_path.read_text())["training"]
    return "class-balanced" in (training.get("loss") or training.get("optimiser", ""))


def candidate_grid(args: argparse.Namespace, dataset: str, size: int) -> list[tuple[int, bool, float]]:
    """(seed, class-balanced, lr) triples, in grid order (the order that breaks remaining ties)."""
    explicit = {"plain": [False], "balanced": [True], "grid": [False, True]}
    if args.adv:
        seeds = [args.seed]
        losses = explicit[args.loss] if args.loss else [standard_loss(args, dataset, size)]
        lrs = [args.lr]
    else:
        seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [0, 1, 2]
        losses = explicit[args.loss or "grid"]
        lrs = [float(v) for v in args.lrs.split(",")]
    if args.quick:  # a smoke test: one candidate
        seeds, losses, lrs = seeds[:1], losses[:1], lrs[:1]
    return [(seed, balanced, lr) for seed in seeds for balanced in losses for lr in lrs]


def train_candidate(
    args: argparse.Namespace,
    train_set: AuditData,
    val: AuditData,
    size: int,
    epochs: int,
    seed: int,
    balanced: bool,
    lr: float,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One training run; returns the state of its best validation epoch and its record."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = architectures.get(args.arch)(in_channels=train_set.channels, num_classes=train_set.num_classes)
    model = wrap(network, train_set.channels, size)
    bind_model(model, train_set)
    class_weights = None
    if balanced:
        counts = torch.bincount(train_set.labels, minlength=train_set.num_classes).float()
        class_weights = counts.sum() / (len(counts) * counts.clamp_min(1))
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=5e-4)
    batches = (train_set.n + args.batch_size - 1) // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * batches)
    best_state, best_scores, best_epoch, started = None, None, 0, time.time()
    for epoch in range(epochs):
        eps = args.adv_eps * min(1.0, (epoch + 1) / max(1, 0.3 * epochs)) if args.adv else 0.0
        model.train()
        order = torch.randperm(train_set.n, generator=generator)
        for start in range(0, train_set.n, args.batch_size):
            idx = order[start : start + args.batch_size]
            x = augment(train_set.float_at(idx), generator)
            y = train_set.labels[idx]
            x = pgd_train_examples(model, x, y, eps, args.adv_steps, generator)
            loss = F.cross_entropy(model(x), y, weight=class_weights)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        scores = validation_scores(model, val, args.adv_eps if args.adv else None, generator)
        shown = " ".join(f"{k[4:]} {v:.3f}" for k, v in scores.items())
        print(
            f"seed {seed} {loss_name(balanced)} lr {lr:g} epoch {epoch + 1}/{epochs}: "
            f"eps {eps:.4f} loss {loss.item():.3f} val {shown}",
            flush=True,
        )
        if best_scores is None or selection_key(scores) > selection_key(best_scores):
            best_scores, best_epoch = scores, epoch + 1
            best_state = {k: v.clone() for k, v in network.state_dict().items()}
    assert best_state is not None and best_scores is not None
    record = {
        "seed": seed,
        "loss": loss_name(balanced),
        "lr": lr,
        "best_epoch": best_epoch,
        **{k: round(v, 4) for k, v in best_scores.items()},
        "seconds": round(time.time() - started, 1),
    }
    return best_state, record


def train(args: argparse.Namespace, dataset: str, size: int, epochs: int) -> Path:
    spec = dict(dataset=dataset, size=size, data_root=args.data_root)
    train_set, val = (load_data(DataSpec(**spec, split=s)) for s in ("train", "val"))
    if args.quick:
        epochs = 1
        train_set = train_set.subset(torch.arange(min(256, train_set.n)).numpy(), {"quick": True})
    started = time.time()
    best: tuple[tuple[float, ...], dict[str, torch.Tensor], dict[str, Any]] | None = None
    candidates = []
    for seed, balanced, lr in candidate_grid(args, dataset, size):
        state, record = train_candidate(args, train_set, val, size, epochs, seed, balanced, lr)
        candidates.append(record)
        print(f"{dataset} {size}px candidate {json.dumps(record)}", flush=True)
        # compared as recorded in the card (4 decimals), so the card shows why a candidate was kept
        key = selection_key({k: v for k, v in record.items() if k.startswith("val_")})
        if best is None or key > best[0]:  # strict: an exact tie keeps the earlier candidate
            best = (key, state, record)
    assert best is not None
    _, state, kept = best
    network = architectures.get(args.arch)(in_channels=train_set.channels, num_classes=train_set.num_classes)
    network.load_state_dict(state)
    network.eval()
    best_score = kept["val_pgd_accuracy"] if args.adv else kept["val_accuracy"]
    training = {
        "script": "sample_models/train.py",
        "epochs": epochs,
        "batch_size": args.batch_size,
        "lr": kept["lr"],
        "optimiser": "AdamW (weight decay 5e-4), one-cycle schedule",
        "loss": kept["loss"],
        "augmentation": "random shifts up to 1/14 of the side (reflect padding), horizontal flips",
        "adversarial": (
            {
                "attack": "PGD",
                "norm": "linf",
                "eps": args.adv_eps,
                "steps": args.adv_steps,
                "step_size": "2.5 * eps / steps",
                "random_start": True,
                "eps_ramp": "linear over the first 30% of epochs",
            }
            if args.adv
            else None
        ),
        "seed": kept["seed"],
        "selection": ADV_PROTOCOL if args.adv else PROTOCOL,
        "candidates": candidates,
        "kept": candidates.index(kept),
        "best_validation_score": best_score,
        "seconds": round(time.time() - started, 1),
        "data_sha256": train_set.identity["sha256"],
    }
    return save_all(args, network, train_set, dataset, size, training)


def save_all(
    args: argparse.Namespace,
    network: torch.nn.Module,
    train_set: AuditData,
    dataset: str,
    size: int,
    training: dict,
) -> Path:
    """Write the three formats and the card; normalisation stays in the card, as in users' models."""
    name = f"{dataset}{'' if size == 28 else f'_{size}'}_{args.arch}{'_adv' if args.adv else ''}"
    stem = args.out / name
    example = torch.zeros(2, train_set.channels, size, size)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(network, example), str(stem.with_suffix(".pt")))
        program = torch.export.export(network, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(stem.with_suffix(".pt2")))
        torch.onnx.export(
            network, (example,), str(stem.with_suffix(".onnx")), dynamo=True, verbose=False,
            dynamic_shapes=({0: batch},), input_names=["images"], output_names=["logits"], external_data=False,
        )  # fmt: skip
    card: dict[str, Any] = {
        "name": name,
        "dataset": {"name": dataset, "size": size},
        "task": train_set.task.value,
        "class_names": list(train_set.class_names),
        "outputs": "logits",
        "arch": args.arch,
        "preprocessing": {
            "input_size": size,
            "channels": train_set.channels,
            "mean": [MEAN] * train_set.channels,
            "std": [STD] * train_set.channels,
        },
        "training": training,
    }
    stem.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    card["metrics"] = measure(stem.with_suffix(".pt"), args, dataset, size)
    stem.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(name, json.dumps(card["metrics"]))
    return stem


def measure(path: Path, args: argparse.Namespace, dataset: str, size: int) -> dict[str, Any]:
    """Clean test metrics and robust accuracy at eps 0.004, exactly as `medaudit eval/attack` compute them."""
    test = load_data(DataSpec(dataset=dataset, size=size, split="test", data_root=args.data_root))
    if args.quick:
        test = test.subset(torch.arange(min(64, test.n)).numpy(), {"quick": True})
    model = load_model(path)
    bind_model(model, test)
    clean = evaluate(model, test, EvalConfig()).metrics()
    config, _ = build_config("pgd" if args.quick else "auto", model, str(AUDIT_EPS), "linf", 256, 0)
    robust = run_attacks(model, test, config).records()[-1]
    return {
        "test": {k: clean[k] for k in ("n", "accuracy", "balanced_accuracy", "auc")},
        "robust_test": {
            "attacks": list(config.attacks),
            "eps": AUDIT_EPS,
            "norm": "linf",
            "robust_accuracy": robust["robust_accuracy"],
            "auc_under_attack": robust["auc_under_attack"],
            "command": f"medaudit attack {path.name} --eps {AUDIT_EPS}",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--epochs", type=int, default=None, help="default: per dataset (see SAMPLES)")
    parser.add_argument(
        "--all", action="store_true", help="train every sample model, standard and adversarial"
    )
    parser.add_argument("--only", default=None, help="with --all: a comma list of datasets")
    parser.add_argument("--arch", default="rescnn")
    parser.add_argument("--adv", action="store_true", help="PGD adversarial training")
    parser.add_argument("--adv-eps", type=float, default=2 / 255)
    parser.add_argument("--adv-steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3, help="the learning rate of adversarial training")
    parser.add_argument(
        "--lrs",
        default="3e-3,1e-3",
        help="standard models: comma list of candidate learning rates (default 3e-3,1e-3)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the seed of adversarial training")
    parser.add_argument(
        "--seeds", default=None, help="standard models: comma list of candidate seeds (default 0,1,2)"
    )
    parser.add_argument(
        "--loss",
        choices=("grid", "plain", "balanced"),
        default=None,
        help="class-balanced loss: both as candidates (standard default), off, or on "
        "(adversarial default: the setting selected for the standard model)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--quick", action="store_true", help="1 epoch on 256 images: a smoke test, not a model"
    )
    parser.add_argument(
        "--measure-only", action="store_true", help="re-measure the cards' metrics of existing models"
    )
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    defaults = {(d, s): e for d, s, e in SAMPLES}
    if args.measure_only:
        for card_path in sorted(args.out.glob("*.json")):
            card = json.loads(card_path.read_text())
            card["metrics"] = measure(
                card_path.with_suffix(".pt"), args, card["dataset"]["name"], card["dataset"]["size"]
            )
            card_path.write_text(json.dumps(card, indent=2) + "\n")
            print(card["name"], json.dumps(card["metrics"]))
    elif args.all:
        for adv in (False, True):  # every standard model first: they are the quick ones
            for dataset, size, epochs in SAMPLES:
                if args.only and dataset not in args.only.split(","):
                    continue
                args.adv = adv
                train(args, dataset, size, args.epochs or epochs)
    else:
        epochs = defaults.get((args.dataset, args.size), 20)
        train(args, args.dataset, args.size, args.epochs or epochs)


if __name__ == "__main__":
    main()
