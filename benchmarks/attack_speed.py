"""Speed and strength of medaudit's attacks against torchattacks and the Adversarial Robustness Toolbox.

    MEDAUDIT_DATA_ROOT=../shared/data/medmnist .venv/bin/python benchmarks/attack_speed.py [--quick]
    MEDAUDIT_DATA_ROOT=../shared/data/medmnist .venv/bin/python benchmarks/attack_speed.py --plans-only [--limit N]
    MEDAUDIT_DATA_ROOT=../shared/data/medmnist .venv/bin/python benchmarks/attack_speed.py --compare-models

First, the plans (``--plans-only``: this part alone, the rest of RESULTS-attack.md kept): whole
processes, each timed as CPU time (user + sys of the child, so that other load on the machine
does not count), at eps 0.004 on the PneumoniaMNIST test split (``--limit N``: a stratified N):
``medaudit attack MODEL --eps 0.004`` (the ``auto`` plan), the same with
``--attack apgd-ce,apgd-dlr,square`` (the full plan, what ``auto`` ran before), one torchattacks
APGD-CE run (100 steps, 1 restart) and torchattacks' AutoAttack components in sequence (APGD-CE,
APGD-DLR where the task has 3 or more classes, Square with 1000 queries, each on the images the
previous left correct). The medaudit processes include the honesty checks and the report.
``--compare-models`` prints, for every sample model at 1/255, 0.004 and 2/255, the robust
accuracy and sweep CPU time of ``auto`` and of the full plan (not written to the results files).

PneumoniaMNIST 28 px test split (624 images; --quick: a stratified 128 and one run) and the sample
model ``sample_models/pneumoniamnist_rescnn.pt``; then the four tools on MedMNIST's 28 px
ResNet-18 (seeded random weights: the cost of a 20x bigger network) on a stratified 128 of the
images, 10 steps, one run. The same threat model for every tool: L-inf, eps
1/255 and 8/255, 10 and 50 steps of eps/4 (medaudit's default step), one uniform random start,
cross-entropy loss, batches of 256. Images per second are the median of ``--repeats`` runs; robust
accuracy is the share of all images still classified correctly. Then the full ``auto`` sweep
(``medaudit attack MODEL --eps 0.004`` without the honesty checks and the report) is timed once.
Writes RESULTS-attack.md (keeping the hand-written notes below its NOTES marker) and
RESULTS-attack.json to --out-dir (default benchmarks/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchattacks
from facts import timed

from medaudit.attacks import AttackConfig, run_attacks
from medaudit.attacks.base import is_correct
from medaudit.attacks.pgd import PGD
from medaudit.attacks.plan import build_config
from medaudit.data import AuditData, DataSpec, load_data, stratified_indices
from medaudit.models import AuditModel, InputSpec, bind_model, load_model
from medaudit.models.archs import architectures
from medaudit.models.wrapper import ModelInfo

OUT = Path(__file__).with_name("RESULTS-attack.md")
MODEL = Path("sample_models/pneumoniamnist_rescnn.pt")
EPS = ((1, 1 / 255), (8, 8 / 255))
STEPS = (10, 50)
BATCH = 256
RESNET_IMAGES = 128  # keeps the whole harness under 20 minutes on 2 cores
NOTES = "<!-- notes: kept when this file is rewritten -->"
TOOLS = ("medaudit run_attacks", "medaudit PGD call", "torchattacks", "ART")


def correct_share(model: AuditModel, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        logits = torch.cat([model(x_adv[i : i + BATCH]) for i in range(0, len(x_adv), BATCH)])
    return float(is_correct(logits, y, model.task).float().mean())


def medaudit_sweep(model: AuditModel, data: AuditData, eps: float, steps: int) -> float:
    """What ``medaudit attack --attack pgd --steps S --restarts 1`` runs: clean pass, attack, AUC push."""
    config = AttackConfig(
        attacks=("pgd",), eps=(eps,), params={"pgd": {"steps": steps, "restarts": 1}}, batch_size=BATCH
    )
    return run_attacks(model, data, config).robust_accuracy(eps)


def medaudit_call(model: AuditModel, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> float:
    """The PGD attack alone, batch by batch on every image (clean-wrong ones too), like the peers."""
    attack, generator = PGD(steps=steps, restarts=1), torch.Generator().manual_seed(0)
    x_adv = torch.cat(
        [
            attack(model, x[i : i + BATCH], y[i : i + BATCH], eps=eps, norm="linf", generator=generator)
            for i in range(0, len(x), BATCH)
        ]
    )
    return correct_share(model, x_adv, y)


def torchattacks_pgd(model: AuditModel, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> float:
    torch.manual_seed(0)
    attack = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=steps, random_start=True)
    x_adv = torch.cat([attack(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)])
    return correct_share(model, x_adv, y)


def art_pgd(
    classifier: Any, model: AuditModel, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int
) -> float:
    from art.attacks.evasion import ProjectedGradientDescent  # only here: --plans-only runs without ART

    np.random.seed(0)
    attack = ProjectedGradientDescent(
        classifier,
        norm=np.inf,
        eps=eps,
        eps_step=eps / 4,
        max_iter=steps,
        num_random_init=1,
        batch_size=BATCH,
        verbose=False,
    )
    x_adv = attack.generate(x.numpy(), y=y.numpy())
    return correct_share(model, torch.from_numpy(x_adv), y)


def resnet18(data: AuditData) -> AuditModel:
    """MedMNIST's 28 px ResNet-18 with seeded random weights: the cost of a 20x bigger network."""
    torch.manual_seed(0)
    network = architectures.get("resnet18_28")(in_channels=1, num_classes=2).eval()
    spec = InputSpec(channels=1, input_size=28, mean=(0.5,), std=(0.5,))
    info = ModelInfo(path="resnet18_28 (seeded)", format="benchmark", sha256="", parameters=None)
    model = AuditModel(network, spec, info)
    bind_model(model, data)
    return model


Results = dict[tuple[int, int, str], tuple[float, float]]


def run_tools(
    model: AuditModel, data: AuditData, settings: list[tuple[int, float, int]], repeats: int
) -> Results:
    """(eps in grey levels, steps, tool) -> (images per second, robust accuracy)."""
    x, y = data.float_images(0, data.n), data.labels
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=len(model.class_names),
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    runners: dict[str, Callable[[float, int], float]] = {
        "medaudit run_attacks": lambda eps, steps: medaudit_sweep(model, data, eps, steps),
        "medaudit PGD call": lambda eps, steps: medaudit_call(model, x, y, eps, steps),
        "torchattacks": lambda eps, steps: torchattacks_pgd(model, x, y, eps, steps),
        "ART": lambda eps, steps: art_pgd(classifier, model, x, y, eps, steps),
    }
    results: Results = {}
    for grey, eps, steps in settings:
        for tool in TOOLS:
            seconds, robust = timed(lambda t=tool, e=eps, s=steps: runners[t](e, s), repeats)
            results[grey, steps, tool] = (data.n / seconds, robust)
            print(
                f"{grey}/255 {steps:>2} steps {tool:<22} {data.n / seconds:8.1f} img/s  robust {robust:.3f}"
            )
    return results


def tables(results: Results) -> list[str]:
    """The speed and robust-accuracy table, then the medaudit / peer ratios."""
    table = [
        "| eps | steps | " + " | ".join(f"{t} img/s" for t in TOOLS) + " | "
        + " | ".join(f"{t} robust" for t in TOOLS) + " |",
        "|---" * (2 + 2 * len(TOOLS)) + "|",
    ]  # fmt: skip
    ratios = [
        "| eps | steps | run_attacks / torchattacks | run_attacks / ART | PGD call / torchattacks | PGD call / ART |",
        "|---|---|---|---|---|---|",
    ]
    for grey, steps in sorted({(grey, steps) for grey, steps, _ in results}):
        speed = {t: results[grey, steps, t][0] for t in TOOLS}
        robust = {t: results[grey, steps, t][1] for t in TOOLS}
        table.append(
            f"| {grey}/255 | {steps} | " + " | ".join(f"{speed[t]:.1f}" for t in TOOLS) + " | "
            + " | ".join(f"{robust[t]:.3f}" for t in TOOLS) + " |"
        )  # fmt: skip
        ours, call = speed["medaudit run_attacks"], speed["medaudit PGD call"]
        ratios.append(
            f"| {grey}/255 | {steps} | {ours / speed['torchattacks']:.2f} | {ours / speed['ART']:.2f} | "
            f"{call / speed['torchattacks']:.2f} | {call / speed['ART']:.2f} |"
        )
    heading = "Headline ratios (medaudit / peer images per second; above 1: medaudit is faster):"
    return [*table, "", heading, "", *ratios]


def as_json(results: Results) -> list[dict]:
    return [
        {"eps_grey": grey, "steps": steps, "tool": tool, "images_per_s": speed, "robust_accuracy": robust}
        for (grey, steps, tool), (speed, robust) in results.items()
    ]


PLAN_EPS = 0.004
FULL_PLAN = "apgd-ce,apgd-dlr,square"
PLANS_BEGIN, PLANS_END = "<!-- plans -->", "<!-- /plans -->"


def child_cpu(argv: list[str]) -> tuple[float, float, str]:
    """(CPU seconds user + sys, wall seconds, stdout) of one whole child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        argv, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu, wall, done.stdout


def medaudit_plan(plan: str | None, limit: int | None) -> tuple[float, float, float]:
    """(CPU s, wall s, robust accuracy) of ``medaudit attack MODEL --eps 0.004 [--attack PLAN]``."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "attack.json"
        argv = [str(Path(sys.executable).with_name("medaudit")), "attack", str(MODEL), "--eps", str(PLAN_EPS)]
        argv += (
            ["--json", str(out)]
            + (["--attack", plan] if plan else [])
            + (["--limit", str(limit)] if limit else [])
        )
        cpu, wall, _ = child_cpu(argv)
        results = json.loads(out.read_text())["results"]
    worst = next(r for r in results["sweep"] if r["attack"] == "worst-case" and r["eps"] == PLAN_EPS)
    return cpu, wall, worst["robust_accuracy"]


def torchattacks_plan(which: str, limit: int | None) -> tuple[float, float, float]:
    """(CPU s, wall s, robust accuracy) of a child running torchattacks (``run_torchattacks``)."""
    argv = [sys.executable, __file__, "--torchattacks", which] + (["--limit", str(limit)] if limit else [])
    cpu, wall, stdout = child_cpu(argv)
    return cpu, wall, float(json.loads(stdout.strip().splitlines()[-1])["robust_accuracy"])


def run_torchattacks(which: str, limit: int | None) -> None:
    """The child: torchattacks APGD-CE alone, or AutoAttack's components in sequence, each on the
    images the previous left correct; prints the share of all images still correct."""
    data = load_data(DataSpec(dataset="pneumoniamnist", split="test", limit=limit))
    model = load_model(MODEL)
    bind_model(model, data)
    x, y = data.float_images(0, data.n), data.labels
    stages = [torchattacks.APGD(model, eps=PLAN_EPS, steps=100, n_restarts=1, loss="ce", seed=0)]
    if which == "components":
        if len(model.class_names) >= 3:
            stages.append(torchattacks.APGD(model, eps=PLAN_EPS, steps=100, n_restarts=1, loss="dlr", seed=0))
        stages.append(torchattacks.Square(model, eps=PLAN_EPS, n_queries=1000, n_restarts=1, seed=0))
    with torch.no_grad():
        correct = torch.cat(
            [
                is_correct(model(x[i : i + BATCH]), y[i : i + BATCH], model.task)
                for i in range(0, data.n, BATCH)
            ]
        )
    for attack in stages:
        rows = correct.nonzero().squeeze(1)
        for i in range(0, len(rows), BATCH):
            batch = rows[i : i + BATCH]
            x_adv = attack(x[batch], y[batch])
            with torch.no_grad():
                correct[batch] = is_correct(model(x_adv), y[batch], model.task)
    print(json.dumps({"robust_accuracy": float(correct.float().mean())}))


SAMPLE_PLANS = (  # model, dataset, stratified subset (None: the whole test split)
    ("pneumoniamnist_rescnn", "pneumoniamnist", None),
    ("pneumoniamnist_rescnn_adv", "pneumoniamnist", 200),
    ("breastmnist_rescnn", "breastmnist", None),
    ("breastmnist_rescnn_adv", "breastmnist", None),
    ("retinamnist_rescnn", "retinamnist", 128),
    ("retinamnist_rescnn_adv", "retinamnist", 128),
)
COMPARE_EPS = "1/255,0.004,2/255"


def compare_models() -> None:
    """``run_attacks`` of ``auto`` and of the full plan on every sample model at 1/255, 0.004 and
    2/255 (one sweep each, seed 0): robust accuracy per eps and CPU seconds of the sweep."""
    for name, dataset, limit in SAMPLE_PLANS:
        data = load_data(DataSpec(dataset=dataset, split="test", limit=limit))
        model = load_model(Path("sample_models") / f"{name}.pt")
        bind_model(model, data)
        for plan in ("auto", FULL_PLAN):
            config, _ = build_config(plan, model, COMPARE_EPS, "linf", BATCH, 0)
            start = time.process_time()
            result = run_attacks(model, data, config)
            robust = " ".join(f"{result.robust_accuracy(e):.4f}" for e in config.eps)
            print(
                f"{name} n={data.n} {plan}: robust {robust}  cpu {time.process_time() - start:.1f} s",
                flush=True,
            )


PLAN_RUNS: dict[str, Callable[[int | None], tuple[float, float, float]]] = {
    "medaudit auto": lambda limit: medaudit_plan(None, limit),
    "torchattacks APGD-CE": lambda limit: torchattacks_plan("apgd-ce", limit),
    "torchattacks AutoAttack components": lambda limit: torchattacks_plan("components", limit),
    "medaudit full plan": lambda limit: medaudit_plan(FULL_PLAN, limit),
}


def plan_section(
    limit: int | None, save: Callable[[list[str], dict], None] = lambda lines, record: None
) -> tuple[list[str], dict]:
    """Whole processes at eps 0.004: auto, torchattacks APGD-CE and components, the full plan
    (slowest last); ``save`` gets the section so far after each run."""
    runs: dict[str, tuple[float, float, float]] = {}
    for name, run in PLAN_RUNS.items():
        runs[name] = cpu, wall, robust = run(limit)
        print(f"{name:<36} cpu {cpu:7.1f} s  wall {wall:7.1f} s  robust {robust:.4f}", flush=True)
        save(*plan_lines(runs, limit))
    return plan_lines(runs, limit)


def plan_lines(runs: dict[str, tuple[float, float, float]], limit: int | None) -> tuple[list[str], dict]:
    """The plans section of RESULTS-attack.md and its JSON record."""
    auto_cpu = runs["medaudit auto"][0]
    images = f"a stratified {limit}" if limit else "all 624"
    lines = [
        PLANS_BEGIN,
        f"## Plans at eps {PLAN_EPS}: `auto` vs the full plan vs torchattacks",
        "",
        f"`MEDAUDIT_DATA_ROOT=../shared/data/medmnist .venv/bin/python benchmarks/attack_speed.py --plans-only"
        f"{f' --limit {limit}' if limit else ''}` on {time.strftime('%Y-%m-%d')}.",
        "",
        f"PneumoniaMNIST 28 px test split ({images} images), `{MODEL}`, whole processes with "
        "`OMP_NUM_THREADS=1`; time is the child's CPU time (user + sys), so load from other "
        f"processes does not count; wall time (load average {os.getloadavg()[0]:.1f}) for reference. "
        "The medaudit processes include model and data loading, the honesty checks and the report.",
        "",
        "| run | CPU s | wall s | robust accuracy | auto CPU / this CPU |",
        "|---|---|---|---|---|",
        *[
            f"| {name} | {cpu:.1f} | {wall:.1f} | {robust:.4f} | {auto_cpu / cpu:.2f} |"
            for name, (cpu, wall, robust) in runs.items()
        ],
        "",
        "- **medaudit auto**: `medaudit attack MODEL --eps 0.004` (APGD-CE that gives up on samples it "
        "cannot reach; APGD-DLR and Square first on the survivors nearest the boundary, in full only "
        "where they break one).",
        f"- **medaudit full plan**: the same with `--attack {FULL_PLAN}` (what `auto` ran before).",
        "- **torchattacks APGD-CE**: `torchattacks.APGD(model, eps=0.004, steps=100, n_restarts=1, loss='ce')`.",
        "- **torchattacks AutoAttack components**: APGD-CE, then APGD-DLR (3 or more classes only), then "
        "`torchattacks.Square(n_queries=1000)`, each on the images still correct.",
        PLANS_END,
    ]
    record = {
        name: {"cpu_s": cpu, "wall_s": wall, "robust_accuracy": robust}
        for name, (cpu, wall, robust) in runs.items()
    }
    return lines, {"eps": PLAN_EPS, "n": limit or 624, "runs": record}


def with_plans(text: str, plans: list[str]) -> str:
    """``text`` with its plans section replaced (or put after the title line)."""
    if PLANS_BEGIN in text:
        head, _, rest = text.partition(PLANS_BEGIN)
        return head + "\n".join(plans) + rest.partition(PLANS_END)[2]
    title, _, rest = text.partition("\n")
    return title + "\n\n" + "\n".join(plans) + "\n" + rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 images, one run, no auto sweep")
    parser.add_argument("--repeats", type=int, default=None, help="runs per cell (default 3; --quick 1)")
    parser.add_argument("--out-dir", type=Path, default=OUT.parent, help="where the results go")
    parser.add_argument("--plans-only", action="store_true", help="only the plans section (the rest kept)")
    parser.add_argument("--limit", type=int, default=None, help="plans: a stratified subset of this size")
    parser.add_argument("--torchattacks", choices=("apgd-ce", "components"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--compare-models", action="store_true", help="auto vs the full plan on every sample model"
    )
    args = parser.parse_args()
    if args.compare_models:
        compare_models()
        return
    if args.torchattacks:  # a child of plan_section
        run_torchattacks(args.torchattacks, args.limit)
        return
    out = args.out_dir / OUT.name

    def save_plans(plans: list[str], record: dict) -> None:
        out.write_text(with_plans(OUT.read_text() if OUT.exists() else "# Attacks\n", plans))
        summary = (
            json.loads(OUT.with_suffix(".json").read_text()) if OUT.with_suffix(".json").exists() else {}
        )
        out.with_suffix(".json").write_text(json.dumps({**summary, "plans": record}, indent=2) + "\n")

    if args.plans_only:
        plan_section(args.limit, save_plans)
        return
    plans, plans_record = plan_section(args.limit)
    repeats = args.repeats or (1 if args.quick else 3)
    data = load_data(DataSpec(dataset="pneumoniamnist", split="test"))
    if args.quick:
        data = data.subset(stratified_indices(data.labels, 128, seed=0), {"limit": 128})
    model = load_model(MODEL)
    bind_model(model, data)
    clean = correct_share(model, data.float_images(0, data.n), data.labels)
    results = run_tools(model, data, [(grey, eps, steps) for grey, eps in EPS for steps in STEPS], repeats)
    small = data.subset(
        stratified_indices(data.labels, min(RESNET_IMAGES, data.n), seed=0), {"limit": RESNET_IMAGES}
    )
    big = resnet18(small)
    big_clean = correct_share(big, small.float_images(0, small.n), small.labels)
    big_results = run_tools(big, small, [(grey, eps, 10) for grey, eps in EPS], 1)
    auto_line = "not run (--quick)"
    if not args.quick:
        start = time.perf_counter()
        config, _ = build_config("auto", model, "0.004", "linf", BATCH, 0)
        auto = run_attacks(model, data, config)
        seconds = time.perf_counter() - start
        auto_line = (
            f"`auto` ({', '.join(config.attacks)}) at eps 0.004: {seconds:.1f} s for {data.n} images "
            f"({data.n / seconds:.1f} img/s), clean {float(auto.clean_correct.mean()):.3f}, "
            f"robust {auto.robust_accuracy(0.004):.3f}"
        )
        print(auto_line)
    facts = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"torchattacks {metadata.version('torchattacks')}, "
        f"adversarial-robustness-toolbox {metadata.version('adversarial-robustness-toolbox')}, "
        f"Python {platform.python_version()}"
    )
    command = "MEDAUDIT_DATA_ROOT=../shared/data/medmnist .venv/bin/python benchmarks/attack_speed.py" + (
        " --quick" if args.quick else ""
    )
    lines = [
        "# Attacks: medaudit PGD vs torchattacks vs Adversarial Robustness Toolbox",
        "",
        *plans,
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d')}; {facts}.",
        "",
        f"PneumoniaMNIST 28 px test split, {data.n} images, `{MODEL}` (clean accuracy {clean:.3f}). "
        f"L-inf, step eps/4, one random start, CE loss, batch {BATCH}, for every tool. "
        f"Images per second: median of {repeats} run(s). Robust accuracy: share of all {data.n} images "
        "classified correctly after the attack (last run).",
        "",
        "- **medaudit run_attacks**: `run_attacks` with `AttackConfig(attacks=('pgd',), steps=S, restarts=1)`, "
        "i.e. `medaudit attack --attack pgd`: clean pass, attack of the clean-correct images only, and "
        "the AUC-under-attack push (10 more max-loss PGD steps on every misclassified image).",
        "- **medaudit PGD call**: the `PGD` attack alone on every image, batch by batch, as the peers run.",
        "- **torchattacks**: `torchattacks.PGD(model, eps, alpha=eps/4, steps, random_start=True)`, batches of 256.",
        "- **ART**: `ProjectedGradientDescent(PyTorchClassifier(model, clip_values=(0, 1)), norm=inf, "
        "eps_step=eps/4, max_iter=steps, num_random_init=1, batch_size=256)`.",
        "",
        *tables(results),
        "",
        f"**ResNet-18** (MedMNIST's 28 px variant, 11 M parameters, seeded random weights: the cost of a "
        f"bigger network) on a stratified {small.n} of the images, 10 steps, one run, clean accuracy "
        f"{big_clean:.3f}:",
        "",
        *tables(big_results),
        "",
        f"Full sweep: {auto_line} (once; `run_attacks` only, without the honesty checks and the report).",
        "",
    ]
    kept = OUT.read_text().partition(NOTES)[2] if OUT.exists() else ""
    if kept:  # hand-written reading of the table, kept across runs
        lines += [NOTES + kept.rstrip("\n"), ""]
    out.write_text("\n".join(lines))
    summary = {
        "command": command,
        "rescnn": as_json(results),
        "resnet18": as_json(big_results),
        "auto": auto_line,
        "plans": plans_record,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
