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

VERDICT_STYLE = {"shortcut": "red", "fragile": "yellow", "none": "green"}


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


def _interval(ci: Any) -> str:
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return "-"
    return f"[{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}]"


def confounder_tables(results: dict[str, Any], title: str) -> list[Table]:
    """Ranking (artifact, position, verdict, effect beyond the matched control with its interval),
    then artifact x strength detail and the flip rate by position. Reports written before the
    calibrated verdicts (no ``effect``) still render, with dashes."""
    thresholds = results.get("thresholds") or {}
    large = thresholds.get("large", thresholds.get("sensitive", 0.1))
    clean = results.get("clean") or {}
    stats = results.get("statistics") or {}
    ranking = Table(
        title=_t(f"{title}: ranked by evidence for a shortcut", "table.title"), title_justify="left"
    )
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("artifact", "left"),
        ("position", "left"),
        ("verdict", "left"),
        ("towards", "left"),
        ("effect [interval]", "right"),
        ("control", "right"),
        ("flips", "right"),
    )
    for column, justify in columns:
        ranking.add_column(column, justify=justify)
    for row in results.get("ranking") or []:
        verdict = str(row.get("verdict"))
        style = VERDICT_STYLE.get(verdict, "")
        ranking.add_row(
            _t(str(row.get("artifact"))),
            _t(str(row.get("position") or "-")),
            _t(verdict, style),
            _t(str(row.get("towards") or row.get("pushes_towards") or "-")),
            f"{_fmt(row.get('effect'), 3)} {_interval(row.get('effect_ci'))}",
            _fmt(row.get("control"), 3),
            _styled(row.get("worst_flip_rate"), _fmt(row.get("worst_flip_rate"), 3), large, large),
        )
    confidence = stats.get("confidence")
    ranking.caption = _t(
        f"n = {clean.get('n')}; clean accuracy {_fmt(clean.get('accuracy'), 3)} {_interval(clean.get('accuracy_ci'))}, "
        f"AUC {_fmt(clean.get('auc'), 3)} {_interval(clean.get('auc_ci'))}; "
        "effect: the artifact's push towards a class (probability) or the drop of that class's AUC with "
        "the artifact on the other classes' images, less what a matched control (same place, mean and "
        "energy, random smooth pattern) does the same way; "
        + (
            f"{confidence:.0%} bootstrap interval over images ({stats.get('bootstrap')} resamples); "
            if isinstance(confidence, float)
            else ""
        )
        + f"shortcut: interval above {thresholds.get('min_effect', '-')}; fragile: no shortcut, "
        f"but flips or AUC drop ≥ {large:g}",
        "table.caption",
    )
    detail = Table(title="Artifact x strength (worst position for tag/patch)", title_justify="left")
    for column in (
        "artifact",
        "strength",
        "position",
        "flip rate",
        "control flips",
        "accuracy",
        "AUC",
        "reversed AUC",
    ):
        detail.add_column(column, justify="left" if column in ("artifact", "position") else "right")
    worst: dict[tuple[str, float], dict[str, Any]] = {}
    for record in results.get("probes") or []:
        key = (record["artifact"], record["strength"])
        if key not in worst or record["flip_rate"] > worst[key]["flip_rate"]:
            worst[key] = record
    for (name, strength), record in worst.items():
        reversed_auc = _fmt(record.get("auc_reversed"), 3)
        detail.add_row(
            _t(name),
            f"{strength:g}",
            _t(record.get("position") or "-"),
            _styled(record["flip_rate"], _fmt(record["flip_rate"], 3), large, large),
            _fmt(record.get("control_flip_rate"), 3),
            _fmt(record.get("accuracy"), 3),
            _fmt(record.get("auc"), 3),
            f"[red]{reversed_auc}[/]" if record.get("reversed_below_chance") else reversed_auc,
        )
    tables = [ranking, detail]
    if results.get("by_position"):
        positions = Table(title="Flip rate by position (worst over strengths)", title_justify="left")
        for column in ("artifact", "position", "worst flip rate", "worst ΔAUC reversed"):
            positions.add_column(column, justify="right" if column.startswith("worst") else "left")
        for row in results["by_position"]:
            positions.add_row(
                _t(row["artifact"]),
                _t(row["position"]),
                _styled(row["worst_flip_rate"], _fmt(row["worst_flip_rate"], 3), large, large),
                _styled(
                    row["worst_auc_drop_reversed"], _fmt(row["worst_auc_drop_reversed"], 3), large, large
                ),
            )
        tables.append(positions)
    if results.get("discovery") is not None:
        tables.append(discovery_table(results["discovery"], results.get("discovery_config") or {}, title))
    return tables


def discovery_table(regions: list[dict[str, Any]], config: dict[str, Any], title: str) -> Table:
    """``discover``: per region, the universal patch's flip rate towards a class against the control."""
    table = Table(
        title=_t(f"{title}: regions where one small universal patch flips predictions", "table.title"),
        title_justify="left",
    )
    for column in ("region", "box (row, col, h, w)", "towards", "flip rate", "control", "flagged"):
        table.add_column(column, justify="right" if column in ("flip rate", "control") else "left")
    for row in regions:
        flagged = bool(row.get("flagged"))
        flip = _fmt(row.get("flip_rate"), 3)
        table.add_row(
            _t(str(row.get("region"))),
            _t(", ".join(str(v) for v in row.get("box") or [])),
            _t(str(row.get("towards"))),
            f"[red]{flip}[/]" if flagged else flip,
            _fmt(row.get("control_flip_rate"), 3),
            "yes" if flagged else "no",
        )
    if config:
        table.caption = _t(
            f"{config.get('method')} search, {config.get('steps')} steps, patch {config.get('patch_px')} px on a "
            f"{config.get('grid')}x{config.get('grid')} grid, fitted on {config.get('n_fit')} images and "
            f"measured on {config.get('n_eval')} others; control: the same search with a fresh random "
            f"pattern per image; flagged: flip rate at least {config.get('min_flip_rate')} and "
            f"{config.get('margin')} above the control",
            "table.caption",
        )
    return table


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
    for column in (
        "p",
        "n artifact / n train",
        "i.i.d. AUC",
        "i.i.d. acc",
        "o.o.d. AUC [interval]",
        "o.o.d. acc",
    ):
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
        interval = _interval(row.get("ood_auc_ci"))
        table.add_row(
            f"{row['fraction']:g}", f"{row['n_artifact']} / {row['n_train']}", _fmt(row["iid_auc"], 3),
            _fmt(row["iid_accuracy"], 3), f"{ood} {interval}" if interval != "-" else ood, _fmt(row["ood_accuracy"], 3),
        )  # fmt: skip
    table.caption = _t(
        f"{results['epochs']} epochs, lr {results['lr']:g}, strength {results['strength']:g}; "
        f"o.o.d.: artifact on every test image not of class '{results['positive_class']}'. "
        f"{results['verdict']}",
        "table.caption",
    )
    return table
