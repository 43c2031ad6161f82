"""Bootstrap intervals carried into the clean rows of ``attack`` and ``shift`` (and robust
accuracy per eps): eval's seeded percentile bootstrap, redone here by hand, equal in a single run
and in the merge of its shards, in the JSON, the gate metrics, the console and the HTML page."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console

from medaudit.attacks import run_attacks
from medaudit.attacks.checks import AuditedSweep, run_checks
from medaudit.attacks.sweep import CLEAN_WRONG, NOT_BROKEN, AttackConfig, AttackResult, EpsOutcome
from medaudit.audits import audits
from medaudit.evaluate import EvalConfig, EvalResult
from medaudit.gate import known_metrics
from medaudit.metrics import bootstrap_intervals
from medaudit.models import bind_model
from medaudit.report.html import attack_section, shift_section
from medaudit.report.tables import attack_tables, shift_tables
from medaudit.sharding import concat
from medaudit.shift.benchmark import ShiftConfig, ShiftResult, run_shift
from medaudit.task import Task
from tests.test_shard import brightness_data, brightness_model, parts, through_json, wrapped


def by_hand(outcomes: np.ndarray, seed: int, rounds: int = 1000, confidence: float = 0.95) -> list[float]:
    """The documented bootstrap: ``default_rng(seed)``, one ``integers(0, n, n)`` draw per round,
    the mean of the drawn images' outcomes, then the two percentiles."""
    rng = np.random.default_rng(seed)
    means = [outcomes[rng.integers(0, len(outcomes), len(outcomes))].mean() for _ in range(rounds)]
    tail = (1 - confidence) / 2
    return [float(q) for q in np.quantile(means, [tail, 1 - tail])]


def synthetic_sweep(n: int = 200, seed: int = 0, eps: tuple[float, ...] = (0.01, 0.02)) -> AttackResult:
    """An attack result from made-up per-image outcomes: some clean-wrong, more broken per eps."""
    rng = np.random.default_rng(5)
    labels = torch.from_numpy(rng.integers(0, 3, n))
    correct = rng.random(n) < 0.8
    broken_by = np.where(correct, NOT_BROKEN, CLEAN_WRONG).astype(np.int8)
    outcomes = []
    logits = torch.zeros(n, 3)
    for share in np.linspace(0.2, 0.5, len(eps)):
        broken_by = broken_by.copy()
        broken_by[(broken_by == NOT_BROKEN) & (rng.random(n) < share)] = 0
        stages = np.zeros((n, 1), dtype=np.int8)
        outcomes.append(
            EpsOutcome(eps[len(outcomes)], broken_by, logits, None, np.zeros(n), np.zeros(n), stages)
        )
    config = AttackConfig(attacks=("fgsm",), eps=eps, seed=seed)
    return AttackResult(config, Task.MULTI_CLASS, ("a", "b", "c"), labels, logits, correct, tuple(outcomes))


def worst(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in results["sweep"] if r["attack"] == "worst-case"]


def width(interval: list[float]) -> float:
    return interval[1] - interval[0]


# ---- attack ----


@pytest.mark.parametrize("seed", [0, 3])
def test_attack_intervals_equal_a_bootstrap_by_hand(seed: int) -> None:
    result = synthetic_sweep(seed=seed)
    out = result.to_dict()
    assert out["clean_accuracy_ci"] == pytest.approx(
        by_hand(result.clean_correct.astype(float), seed), abs=1e-12
    )
    for record, outcome in zip(worst(out), result.outcomes, strict=True):
        expected = by_hand(outcome.robust.astype(float), seed)
        assert record["robust_accuracy_ci"] == pytest.approx(expected, abs=1e-12)
        low, high = record["robust_accuracy_ci"]
        assert low <= record["robust_accuracy"] <= high
    low, high = out["clean_accuracy_ci"]
    assert low <= out["clean_accuracy"] <= high
    assert out["bootstrap"] == {
        "rounds": 1000,
        "confidence": 0.95,
        "seed": seed,
        "method": "percentile; images resampled with replacement",
    }
    assert all("robust_accuracy_ci" not in r for r in out["sweep"] if r["attack"] != "worst-case")


def test_attack_intervals_shrink_with_more_images() -> None:
    small, large = synthetic_sweep(n=100).to_dict(), synthetic_sweep(n=1600).to_dict()
    assert width(large["clean_accuracy_ci"]) < width(small["clean_accuracy_ci"]) / 2
    for a, b in zip(worst(small), worst(large), strict=True):
        assert width(b["robust_accuracy_ci"]) < width(a["robust_accuracy_ci"]) / 2


def test_attack_clean_interval_is_evals_accuracy_interval() -> None:
    """Same images, same seed, same per-image correctness (argmax): the same interval as eval's."""
    rng = np.random.default_rng(11)
    n = 150
    labels = rng.integers(0, 3, n)
    logits = torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float32))
    logits[np.arange(n), labels] += 1.0
    correct = logits.argmax(dim=1).numpy() == labels
    config = AttackConfig(attacks=("fgsm",), eps=(0.01,), seed=7)
    outcome = EpsOutcome(
        0.01, np.where(correct, NOT_BROKEN, CLEAN_WRONG).astype(np.int8), logits, None,
        np.zeros(n), np.zeros(n), np.zeros((n, 1), dtype=np.int8),
    )  # fmt: skip
    attack = AttackResult(
        config, Task.MULTI_CLASS, ("a", "b", "c"), torch.from_numpy(labels), logits, correct, (outcome,)
    ).to_dict()
    evaluated = EvalResult(
        logits, torch.from_numpy(labels), Task.MULTI_CLASS, ("a", "b", "c"), EvalConfig(seed=7)
    ).to_dict()
    assert attack["clean_accuracy_ci"] == evaluated["accuracy_ci"]
    assert worst(attack)[0]["robust_accuracy_ci"] == evaluated["accuracy_ci"]  # nothing broken


def test_attack_intervals_of_a_merge_equal_the_single_run(audit_data) -> None:
    data = brightness_data(audit_data)
    model = brightness_model(data)
    config = AttackConfig(attacks=("pgd",), eps=(0.02, 0.1), batch_size=8, seed=2)

    def audited(d):
        result = run_attacks(model, d, config)
        return AuditedSweep(result, run_checks(model, d, result))

    whole = audited(data).to_dict()
    pieces = [through_json(audited(part)) for part in parts(data, 3)]
    merged = concat(pieces).to_dict()
    assert merged["clean_accuracy_ci"] == whole["clean_accuracy_ci"] is not None
    assert [r["robust_accuracy_ci"] for r in worst(merged)] == [r["robust_accuracy_ci"] for r in worst(whole)]
    assert merged == whole
    # and they are the whole's, not a part's
    first_part = pieces[0].to_dict()
    assert first_part["clean_accuracy_ci"] != whole["clean_accuracy_ci"]
    correct = (model.predict(data.float_images(0, data.n)).argmax(dim=1) == data.labels).numpy()
    assert whole["clean_accuracy_ci"] == pytest.approx(by_hand(correct.astype(float), 2), abs=1e-12)


def test_attack_gate_metrics_read_the_interval_ends() -> None:
    out = synthetic_sweep().to_dict()
    metrics = audits.get("attack").extract(out)
    assert metrics["attack.clean_accuracy_ci_low"] == out["clean_accuracy_ci"][0]
    assert metrics["attack.clean_accuracy_ci_high"] == out["clean_accuracy_ci"][1]
    for record in worst(out):
        tag = format(record["eps"], "g")
        assert metrics[f"attack.robust_accuracy_ci_low@{tag}"] == record["robust_accuracy_ci"][0]
        assert metrics[f"attack.robust_accuracy_ci_high@{tag}"] == record["robust_accuracy_ci"][1]
    known = known_metrics()
    for key in (
        "attack.clean_accuracy_ci_low",
        "attack.robust_accuracy_ci_low@EPS",
        "shift.clean_be_ci_high",
    ):
        assert known[key].higher_is_better is not None
    assert known["attack.robust_accuracy_ci_low@EPS"].higher_is_better is True
    assert known["shift.clean_be_ci_high"].higher_is_better is False


def test_old_attack_reports_have_no_interval_metrics_and_still_render() -> None:
    out = synthetic_sweep().to_dict()
    out.pop("clean_accuracy_ci")
    out.pop("bootstrap")
    for record in worst(out):
        record.pop("robust_accuracy_ci")
    metrics = audits.get("attack").extract(out)
    assert not any("_ci_" in key for key in metrics)
    console = Console(record=True, width=200)
    for shown in attack_tables(out, [], "t"):
        console.print(shown)
    assert "CI" not in console.export_text()
    assert "interval" not in attack_section(out, "t")


def test_null_interval_gives_nan_ends() -> None:
    out = synthetic_sweep().to_dict()
    out["clean_accuracy_ci"] = None
    metrics = audits.get("attack").extract(out)
    assert math.isnan(metrics["attack.clean_accuracy_ci_low"])


def test_attack_console_and_html_show_the_intervals() -> None:
    out = synthetic_sweep().to_dict()
    console = Console(record=True, width=200)
    for shown in attack_tables(out, [], "t"):
        console.print(shown)
    text = " ".join(console.export_text().split())  # captions wrap
    low, high = worst(out)[0]["robust_accuracy_ci"]
    assert "95% CI" in text and f"{low:.3f}–{high:.3f}" in text
    clean_low, clean_high = out["clean_accuracy_ci"]
    assert f"clean accuracy 95% interval {clean_low:.4f} – {clean_high:.4f}" in text
    assert "1000 resamples, seed 0" in text
    page = attack_section(out, "t")
    assert "95% interval" in page and f"{low:.3f} – {high:.3f}" in page
    assert f"clean accuracy 95% interval {clean_low:.4f} – {clean_high:.4f}" in page


# ---- shift ----


def synthetic_shift(n: int = 160, seed: int = 0, task: Task = Task.BINARY) -> ShiftResult:
    classes = 2 if task is Task.BINARY else 4
    rng = np.random.default_rng(9)
    labels = rng.integers(0, classes, n)
    clean = rng.normal(size=(n, classes))
    clean[np.arange(n), labels] += 1.2
    noisy = clean + rng.normal(size=(n, classes))
    config = ShiftConfig(
        corruptions=("gaussian_noise",), source="pneumoniamnist", mode="scaled", severities=(3,), seed=seed
    )
    return ShiftResult(
        config=config,
        clean_logits=torch.from_numpy(clean.astype(np.float32)),
        cell_logits={("gaussian_noise", 3): torch.from_numpy(noisy.astype(np.float32))},
        labels=torch.from_numpy(labels),
        task=task,
        class_names=tuple(f"c{i}" for i in range(classes)),
        baseline_note="synthetic",
    )


@pytest.mark.parametrize("task", [Task.BINARY, Task.MULTI_CLASS])
@pytest.mark.parametrize("seed", [0, 4])
def test_shift_clean_intervals_are_evals(task: Task, seed: int) -> None:
    result = synthetic_shift(seed=seed, task=task)
    clean = result.to_dict()["clean"]
    evaluated = EvalResult(
        result.clean_logits, result.labels, task, result.class_names, EvalConfig(seed=seed)
    ).to_dict()
    for metric in ("accuracy", "balanced_accuracy", "auc"):
        assert clean[f"{metric}_ci"] == evaluated[f"{metric}_ci"]
        low, high = clean[f"{metric}_ci"]
        assert low <= clean[metric] <= high
    low, high = clean["balanced_accuracy_ci"]
    assert clean["balanced_error_ci"] == pytest.approx([1 - high, 1 - low])
    assert clean["balanced_error_ci"][0] <= clean["balanced_error"] <= clean["balanced_error_ci"][1]
    correct = (result.clean_logits.argmax(dim=1) == result.labels).numpy().astype(float)
    assert clean["accuracy_ci"] == pytest.approx(by_hand(correct, seed), abs=1e-12)
    raw = bootstrap_intervals(result.clean_logits, result.labels, task, 0.5, 1000, 0.95, seed)
    assert result.to_dict()["bootstrap"]["auc_skipped"] == raw["auc_skipped"]


def test_shift_intervals_shrink_with_more_images() -> None:
    small, large = (synthetic_shift(n).to_dict()["clean"] for n in (100, 1600))
    for metric in ("accuracy", "balanced_error", "auc"):
        assert width(large[f"{metric}_ci"]) < width(small[f"{metric}_ci"]) / 2


def test_shift_intervals_of_a_merge_equal_the_single_run(make_cnn, audit_data) -> None:
    data = audit_data(n=64, seed=4)
    model = wrapped(make_cnn)
    bind_model(model, data)
    config = ShiftConfig(
        corruptions=("gaussian_noise",), source="pneumoniamnist", mode="scaled", batch_size=8
    )
    whole = run_shift(model, data, config).to_dict()
    merged = concat([through_json(run_shift(model, part, config)) for part in parts(data, 2)]).to_dict()
    assert merged["clean"] == whole["clean"] and merged["bootstrap"] == whole["bootstrap"]
    assert whole["clean"]["balanced_error_ci"] is not None
    assert merged == whole


def test_shift_gate_metrics_console_and_html() -> None:
    out = synthetic_shift().to_dict()
    low, high = out["clean"]["balanced_error_ci"]
    metrics = audits.get("shift").extract(out)
    assert (metrics["shift.clean_be_ci_low"], metrics["shift.clean_be_ci_high"]) == (low, high)
    console = Console(record=True, width=250)
    for shown in shift_tables(out, "t"):
        console.print(shown)
    text = " ".join(console.export_text().split())  # captions wrap
    assert "clean balanced error 95% interval" in text and f"{low:.4f} – {high:.4f}" in text
    assert "clean BE 95% interval" in text and "1000 resamples, seed 0" in text
    page = shift_section(out, "t")
    assert "clean balanced error 95% interval" in page and f"{low:.4f} – {high:.4f}" in page
    assert "clean accuracy 95% interval" in page
    old = {**out, "clean": {k: v for k, v in out["clean"].items() if not k.endswith("_ci")}}
    old.pop("bootstrap")
    assert not any("_ci_" in key for key in audits.get("shift").extract(old))
    assert "interval" not in shift_section(old, "t")
