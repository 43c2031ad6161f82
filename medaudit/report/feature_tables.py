"""Rich tables for ``medaudit features``: nonrobust-feature usefulness per model, then the trade-off
table with one column per model. Paths and labels from the user go in as ``rich.text.Text``."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from medaudit.report.escaping import rich_text as _t
from medaudit.report.tables import _fmt

DATASET = {"rand": "D_rand", "det": "D_det"}
CLEAN_REFERENCE = "clean (original labels)"
"""The set name of the clean reference: the same network and recipe on the clean training split."""


def _interval_text(interval: Any) -> str | None:
    ok = (
        isinstance(interval, list)
        and len(interval) == 2
        and all(isinstance(v, int | float) for v in interval)
    )
    return f"{interval[0]:.3f}–{interval[1]:.3f}" if ok else None


def dataset_name(kind: Any) -> str:
    """D_rand / D_det for the JSON's kind (any other value as it is)."""
    return DATASET.get(str(kind), str(kind))


def models_of(results: dict[str, Any]) -> list[dict[str, Any]]:
    models = results.get("models")
    return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []


def nonrobust_rows(model: dict[str, Any]) -> list[dict[str, Any]]:
    rows = (model.get("nonrobust") or {}).get("rows")
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def tradeoff_rows(model: dict[str, Any]) -> list[tuple[str, Any]]:
    """(label, value) of one model's trade-off column, in the table's order."""
    shift: dict[str, Any] = model["shift"] if isinstance(model.get("shift"), dict) else {}
    eps = model.get("robust_eps")
    at = f" @ {eps * 255:.2g}/255" if isinstance(eps, int | float) else ""
    saliency = model.get("saliency") or {}
    rows: list[tuple[str, Any]] = [
        ("clean accuracy", model.get("clean_accuracy")),
        ("clean accuracy 95% interval", _interval_text(model.get("clean_accuracy_ci"))),
        (f"robust accuracy{at}", model.get("robust_accuracy")),
        ("MedMNIST-C clean balanced error", shift.get("clean_be")),
        ("MedMNIST-C mean balanced error", shift.get("mean_be")),
        ("MedMNIST-C mean accuracy drop", shift.get("mean_accuracy_drop")),
    ]
    rows += [(f"{dataset_name(r.get('kind'))} accuracy", r.get("accuracy")) for r in nonrobust_rows(model)]
    reference = (model.get("nonrobust") or {}).get("reference")
    if isinstance(reference, dict):
        rows.append(("fresh network on clean training split", reference.get("accuracy")))
    rows.append(("saliency stability (mean Spearman)", saliency.get("mean")))
    return rows


def features_tables(results: dict[str, Any], title: str) -> list[Table]:
    models = models_of(results)
    first = (models[0].get("nonrobust") or {}) if models else {}
    usefulness = Table(
        title=_t(f"Nonrobust-feature usefulness: {title}", "table.title"),
        title_justify="left",
        caption=_t(
            f"clean test accuracy of a fresh {first.get('architecture', 'network')} trained on each set; "
            f"chance {_fmt(first.get('chance'), 3)}, majority class {_fmt(first.get('majority'), 3)}"
            + (
                "; the eps-0 runs do not depend on the audited model's weights and were trained once"
                if any((m.get("nonrobust") or {}).get("eps_zero_reused") for m in models)
                else ""
            )
        ),
        caption_justify="left",
    )
    for column in ("model", "set", "L2 eps", "reached", "accuracy", "bal. acc.", "eps-0 control"):
        text = column in ("model", "set")
        usefulness.add_column(column, justify="left" if text else "right", no_wrap=column == "set")
    for model in models:
        for row in nonrobust_rows(model):
            usefulness.add_row(
                _t(str(model.get("label"))),
                dataset_name(row.get("kind")),
                _fmt(row.get("eps"), 3),
                _fmt(row.get("attack_success"), 3),
                _fmt(row.get("accuracy"), 3),
                _fmt(row.get("balanced_accuracy"), 3),
                _fmt(row.get("control_accuracy"), 3),
            )
        reference = (model.get("nonrobust") or {}).get("reference")
        if isinstance(reference, dict):
            usefulness.add_row(
                _t(str(model.get("label"))),
                CLEAN_REFERENCE,
                _fmt(0.0, 3),
                "-",
                _fmt(reference.get("accuracy"), 3),
                _fmt(reference.get("balanced_accuracy"), 3),
                "-",
            )
    paths = "; ".join(f"{m.get('label')}: {m.get('path')}" for m in models)
    tradeoff = Table(
        title=_t(f"Trade-off: {title}", "table.title"),
        title_justify="left",
        caption=_t(paths),
        caption_justify="left",
    )
    tradeoff.add_column("metric")
    for model in models:
        tradeoff.add_column(_t(str(model.get("label"))), justify="right")
    columns = [tradeoff_rows(m) for m in models]
    for index, (label, _) in enumerate(columns[0] if columns else []):
        tradeoff.add_row(label, *(_fmt(col[index][1], 3) if index < len(col) else "-" for col in columns))
    steps = sorted({step for m in models for step in (m.get("seconds") or {})})
    for step in steps:
        tradeoff.add_row(f"time: {step} (s)", *(_fmt((m.get("seconds") or {}).get(step), 1) for m in models))
    return [usefulness, tradeoff]
