"""Train a sample model on a real MedMNIST file and save it in every format medaudit reads.

    python sample_models/train.py --dataset pneumoniamnist               # standard training
    python sample_models/train.py --dataset pneumoniamnist --adv         # PGD adversarial training
    python sample_models/train.py --all                                  # every sample model
    python sample_models/train.py --dataset breastmnist --quick --out /tmp/x   # smoke test

Writes ``<out>/<dataset>[_<size>]_<arch>[_adv].pt`` (TorchScript), ``.pt2``
(torch.export), ``.onnx`` and the ``.json`` model card: preprocessing, classes,
training configuration, data checksum, and the test metrics measured by medaudit
itself (clean, and robust at eps 0.004 L-inf with the ``auto`` attack plan).

Seeded and deterministic on the CPU. Model selection uses the validation split
only (never the test split): best validation accuracy for standard models, best
validation PGD accuracy at the training eps for adversarially trained ones.
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
SAMPLES = [  # (dataset, size, epochs, class-balanced loss)
    ("pneumoniamnist", 28, 12, True),  # training set 74% pneumonia, test set 62.5%
    ("breastmnist", 28, 40, False),
    ("breastmnist", 64, 25, False),
    ("retinamnist", 28, 40, False),
]


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


def validation_score(
    model: AuditModel, val: AuditData, adv_eps: float | None, generator: torch.Generator
) -> float:
    model.eval()
    if adv_eps is None:
        logits = predict_logits(model, val, 512)
        return classification_metrics(logits, val.labels, val.task, val.class_names)["accuracy"]
    x = val.float_images(0, val.n)
    x_adv = pgd_train_examples(model, x, val.labels, adv_eps, 10, generator)
    return float((model.predict(x_adv).argmax(1) == val.labels).float().mean())


def train(args: argparse.Namespace, dataset: str, size: int, epochs: int, balanced: bool) -> Path:
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    spec = dict(dataset=dataset, size=size, data_root=args.data_root)
    train_set, val = (load_data(DataSpec(**spec, split=s)) for s in ("train", "val"))
    if args.quick:
        epochs = 1
        train_set = train_set.subset(torch.arange(min(256, train_set.n)).numpy(), {"quick": True})
    network = architectures.get(args.arch)(in_channels=train_set.channels, num_classes=train_set.num_classes)
    model = wrap(network, train_set.channels, size)
    bind_model(model, train_set)
    class_weights = None
    if balanced:
        counts = torch.bincount(train_set.labels, minlength=train_set.num_classes).float()
        class_weights = counts.sum() / (len(counts) * counts.clamp_min(1))
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=5e-4)
    batches = (train_set.n + args.batch_size - 1) // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=epochs * batches)
    best_state, best_score, started = None, -1.0, time.time()
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
        score = validation_score(model, val, args.adv_eps if args.adv else None, generator)
        print(
            f"{dataset} {size}px epoch {epoch + 1}/{epochs}: eps {eps:.4f} loss {loss.item():.3f} val {score:.3f}"
        )
        if score > best_score:
            best_score = score
            best_state = {k: v.clone() for k, v in network.state_dict().items()}
    network.load_state_dict(best_state)
    network.eval()
    training = {
        "script": "sample_models/train.py",
        "epochs": epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "optimiser": "AdamW (weight decay 5e-4), one-cycle schedule",
        "loss": "class-balanced cross-entropy" if balanced else "cross-entropy",
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
        "seed": args.seed,
        "selection": "best validation PGD-10 accuracy at the training eps"
        if args.adv
        else "best validation accuracy",
        "best_validation_score": round(best_score, 4),
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
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
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
    defaults = {(d, s): (e, b) for d, s, e, b in SAMPLES}
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
            for dataset, size, epochs, balanced in SAMPLES:
                if args.only and dataset not in args.only.split(","):
                    continue
                args.adv = adv
                train(args, dataset, size, args.epochs or epochs, balanced)
    else:
        epochs, balanced = defaults.get((args.dataset, args.size), (20, False))
        train(args, args.dataset, args.size, args.epochs or epochs, balanced)


if __name__ == "__main__":
    main()
