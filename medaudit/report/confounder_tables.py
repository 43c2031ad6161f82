"""Rich tables for ``medaudit confounders``: the ranking first (what to worry about), then the detail.

Titles and strings from the user's files (class names, metadata groups, attribute names) go in as
``rich.text.Text`` (``escaping.rich_text``): never parsed as markup. Callers pass titles unescaped.
"""

from __future__ import annotations

from typing import Any

from rich.console import JustifyMethod
from rich.table import Table

from medaudit.report.escaping import rich_text as _t
from medaudit.report.tables import _fmt

VERDICT_STYLE = {"sensitive": "red", "mildly sensitive": "yellow", "insensitive": "green"}


def _styled(value: float | None, text: str, sensitive: float, mild: float) -> str:
    if value is None or value != value:  # None or NaN
        return text
    style = "red" if value >= sensitive else "yellow" if value >= mild else ""
    return f"[{style}]{text}[/]" if style else text


def artifact_list_table(entries: list[tuple[str, str]]) -> Table:
    """``--list``: every artifact with its one-line description."""
    table = Table(title="Confounder artifacts", title_justify="left")
    table.add_column("artifact")
    table.add_column("description")
    for name, description in entries:
        table.add_row(_t(name), _t(description))
    return table


def confounder_tables(results: dict[str, Any], title: str) -> list[Table]:
    """Ranking (artifact, worst flip rate, worst reversed AUC drop, verdict) and artifact x strength detail."""
    sensitive, mild = results["thresholds"]["sensitive"], results["thresholds"]["mild"]
    clean = results["clean"]
    ranking = Table(
        title=_t(f"{title}: artifacts ranked by sensitivity", "table.title"), title_justify="left"
    )
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("artifact", "left"),
        ("worst flip rate", "right"),
        ("worst ΔAUC reversed", "right"),
        ("verdict", "left"),
    )
    for column, justify in columns:
        ranking.add_column(column, justify=justify)
    for row in results["ranking"]:
        style = VERDICT_STYLE[row["verdict"]]
        ranking.add_row(
            _t(row["artifact"]),
            _styled(row["worst_flip_rate"], _fmt(row["worst_flip_rate"], 3), sensitive, mild),
            _styled(row["worst_auc_drop_reversed"], _fmt(row["worst_auc_drop_reversed"], 3), sensitive, mild),
            _t(row["summary"], style),
        )
    ranking.caption = _t(
        f"n = {clean['n']}; clean accuracy {_fmt(clean['accuracy'], 3)}, AUC {_fmt(clean['auc'], 3)}; "
        f"reversed: artifact on images not of class '{results['positive_class']}' only; "
        f"red ≥ {sensitive:g}, yellow ≥ {mild:g}",
        "table.caption",
    )
    detail = Table(title="Artifact x strength (worst position for tag/patch)", title_justify="left")
    for column in ("artifact", "strength", "position", "flip rate", "accuracy", "AUC", "reversed AUC"):
        detail.add_column(column, justify="left" if column in ("artifact", "position") else "right")
    worst: dict[tuple[str, float], dict[str, Any]] = {}
    for record in results["probes"]:
        key = (record["artifact"], record["strength"])
        if key not in worst or record["flip_rate"] > worst[key]["flip_rate"]:
            worst[key] = record
    for (name, strength), record in worst.items():
        reversed_auc = _fmt(record["auc_reversed"], 3)
        detail.add_row(
            _t(name),
            f"{strength:g}",
            _t(record["position"] or "-"),
            _styled(record["flip_rate"], _fmt(record["flip_rate"], 3), sensitive, mild),
            _fmt(record["accuracy"], 3),
            _fmt(record["auc"], 3),
            f"[red]{reversed_auc}[/]" if record["reversed_below_chance"] else reversed_auc,
        )
    tables = [ranking, detail]
    if results["by_position"]:
        positions = Table(title="Sensitivity by position (worst over strengths)", title_justify="left")
        for column in ("artifact", "position", "worst flip rate", "worst ΔAUC reversed"):
            positions.add_column(column, justify="right" if column.startswith("worst") else "left")
        for row in results["by_position"]:
            positions.add_row(
                _t(row["artifact"]),
                _t(row["position"]),
                _styled(row["worst_flip_rate"], _fmt(row["worst_flip_rate"], 3), sensitive, mild),
                _styled(
                    row["worst_auc_drop_reversed"], _fmt(row["worst_auc_drop_reversed"], 3), sensitive, mild
                ),
            )
        tables.append(positions)
    return tables


def _with_ci(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "-"
    interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    return f"{value:.3f}{interval}"


def subgroup_table(results: dict[str, Any], title: str) -> Table:
    """One row per group (metric with its interval), then one gap row per metric: where the model is worse."""
    metrics = ("accuracy", "balanced_accuracy", "auc")
    table = Table(title=_t(f"{title}: by {results['attribute']}", "table.title"), title_justify="left")
    table.add_column("group")
    table.add_column("n", justify="right")
    for column in ("accuracy", "balanced accuracy", "AUC"):
        table.add_column(column, justify="right")
    for row in results["groups"]:
        table.add_row(
            _t(row["group"]),
            str(row["n"]),
            *(_with_ci(row[m], row[f"{m}_ci"]) for m in metrics),
        )
    table.add_section()
    for metric in metrics:
        gap = results["gaps"][metric]
        cells = ["-"] * len(metrics)
        if gap["value"] is not None:
            cells[metrics.index(metric)] = f"[bold]{_with_ci(gap['value'], gap['ci'])}[/]"
            label = f"gap {metric.replace('_', ' ')}: {gap['largest_group']} - {gap['smallest_group']}"
        else:
            label = f"gap {metric.replace('_', ' ')}: fewer than two groups"
        table.add_row(_t(label), "", *cells)
    caption = f"{results['confidence']:.0%} percentile bootstrap intervals, {results['rounds']} rounds"
    notes = results.get("notes") or []
    table.caption = _t("; ".join([caption, *(str(n) for n in notes)]), "table.caption")
    return table


def finetune_table(results: dict[str, Any], title: str) -> Table:
    """``--finetune``: one row per fraction p (i.i.d. and o.o.d. AUC/accuracy), the baseline first."""
    table = Table(
        title=_t(
            f"{title}: fine-tuned with '{results['artifact']}' on a fraction p of positives", "table.title"
        ),
        title_justify="left",
    )
    for column in ("p", "n artifact / n train", "i.i.d. AUC", "i.i.d. acc", "o.o.d. AUC", "o.o.d. acc"):
        table.add_column(column, justify="left" if column == "p" else "right")
    base = results["baseline"]
    table.add_row(
        "as given", "-", _fmt(base["iid_auc"], 3), _fmt(base["iid_accuracy"], 3),
        _fmt(base["ood_auc"], 3), _fmt(base["ood_accuracy"], 3),
    )  # fmt: skip
    table.add_section()
    first = results["curve"][0]["ood_auc"]
    for row in results["curve"]:
        drop = first - row["ood_auc"] if first == first and row["ood_auc"] == row["ood_auc"] else None
        ood = _styled(
            drop, _fmt(row["ood_auc"], 3), results["thresholds"]["susceptible"], results["thresholds"]["mild"]
        )
        table.add_row(
            f"{row['fraction']:g}", f"{row['n_artifact']} / {row['n_train']}", _fmt(row["iid_auc"], 3),
            _fmt(row["iid_accuracy"], 3), ood, _fmt(row["ood_accuracy"], 3),
        )  # fmt: skip
    table.caption = _t(
        f"{results['epochs']} epochs, lr {results['lr']:g}, strength {results['strength']:g}; "
        f"o.o.d.: artifact on every test image not of class '{results['positive_class']}'. "
        f"{results['verdict']}",
        "table.caption",
    )
    return table
