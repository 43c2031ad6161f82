"""Train a sample model on a real MedMNIST file and save it in every format medaudit reads.

    python sample_models/train.py --dataset pneumoniamnist --arch rescnn --epochs 8

Writes ``sample_models/<dataset>_<arch>.pt`` (TorchScript), ``.pt2`` (torch.export),
``.onnx`` and the ``.json`` model card (preprocessing, classes, training
configuration, data checksum and the test metrics measured by medaudit).
Seeded and deterministic on the CPU; model selection uses the validation split only.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from medaudit.data import DataSpec, load_data
from medaudit.evaluate import EvalConfig, evaluate, predict_logits
from medaudit.metrics import classification_metrics
from medaudit.models import InputSpec, bind_model, load_model
from medaudit.models.archs import architectures
from medaudit.models.wrapper import AuditModel, ModelInfo

HERE = Path(__file__).parent
MEAN, STD = 0.5, 0.5


def wrap(network: torch.nn.Module, channels: int, size: int) -> AuditModel:
    spec = InputSpec(channels=channels, input_size=size, mean=(MEAN,) * channels, std=(STD,) * channels)
    return AuditModel(network, spec, ModelInfo(path="", format="training", sha256="", parameters=None))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--arch", default="rescnn")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    splits = {
        split: load_data(
            DataSpec(dataset=args.dataset, size=args.size, split=split, data_root=args.data_root)
        )
        for split in ("train", "val", "test")
    }
    train, val = splits["train"], splits["val"]
    channels = train.channels
    network = architectures.get(args.arch)(in_channels=channels, num_classes=train.num_classes)
    model = wrap(network, channels, args.size)
    bind_model(model, train)
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((train.n + args.batch_size - 1) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=steps)
    generator = torch.Generator().manual_seed(args.seed)
    best_state, best_val, started = None, -1.0, time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(train.n, generator=generator)
        for start in range(0, train.n, args.batch_size):
            idx = order[start : start + args.batch_size]
            x = train.images[idx].float() / 255.0
            if torch.rand(1, generator=generator).item() < 0.5:
                x = x.flip(-1)
            loss = F.cross_entropy(model(x), train.labels[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        model.eval()
        val_metrics = classification_metrics(
            predict_logits(model, val, 512), val.labels, train.task, train.class_names
        )
        score = val_metrics["balanced_accuracy"]
        print(
            f"epoch {epoch + 1}: loss {loss.item():.3f} val acc {val_metrics['accuracy']:.3f} bal {score:.3f}"
        )
        if score > best_val:
            best_val = score
            best_state = {k: v.clone() for k, v in network.state_dict().items()}
    network.load_state_dict(best_state)
    network.eval()
    save_all(args, network, model, splits, best_val, time.time() - started)


def save_all(args, network, model, splits, best_val, seconds) -> None:
    """Write the three formats and the card; normalisation stays in the card, as in users' models."""
    train, test = splits["train"], splits["test"]
    stem = args.out / f"{args.dataset}{'' if args.size == 28 else f'_{args.size}'}_{args.arch}"
    example = torch.zeros(2, train.channels, args.size, args.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(network, example), str(stem.with_suffix(".pt")))
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(network, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(stem.with_suffix(".pt2")))
        torch.onnx.export(
            network,
            (example,),
            str(stem.with_suffix(".onnx")),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            input_names=["images"],
            output_names=["logits"],
            external_data=False,
        )
    card = {
        "name": stem.name,
        "dataset": {"name": args.dataset, "size": args.size},
        "task": train.task.value,
        "class_names": list(train.class_names),
        "outputs": "logits",
        "arch": args.arch,
        "preprocessing": {
            "input_size": args.size,
            "channels": train.channels,
            "mean": [MEAN] * train.channels,
            "std": [STD] * train.channels,
        },
        "training": {
            "script": "sample_models/train.py",
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "optimiser": "AdamW (weight decay 1e-4), one-cycle schedule, horizontal flips",
            "seed": args.seed,
            "selection": "best validation balanced accuracy",
            "best_val_balanced_accuracy": round(best_val, 4),
            "seconds": round(seconds, 1),
            "data_sha256": train.identity["sha256"],
        },
    }
    stem.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    reloaded = load_model(stem.with_suffix(".pt"))
    bind_model(reloaded, test)
    metrics = evaluate(reloaded, test, EvalConfig()).metrics()
    card["metrics"] = {"test": {k: metrics[k] for k in ("n", "accuracy", "balanced_accuracy", "auc")}}
    stem.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["metrics"]))


if __name__ == "__main__":
    main()
