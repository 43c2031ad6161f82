"""Rich tables for the terminal (always on stderr when JSON goes to stdout).

Titles and every string that can come from the user's files (paths, class names, layer names, notes)
are plain text: they go into the tables as ``rich.text.Text`` (``escaping.rich_text``), so rich never
parses them as markup. Callers pass titles unescaped.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from medaudit.audits import audits
from medaudit.audits.evaluation import (
    confidence_percent,
    headline,
    interval_note,
    interval_text,
    method_note,
)
from medaudit.report.escaping import rich_text as _t


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _gradients(value: bool | str) -> str:
    if isinstance(value, str):
        return value
    return "yes" if value else "no (black-box: score-based attacks only)"


def info_table(desc: dict[str, Any]) -> Table:
    table = Table(title="Model", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    spec = desc["input"]
    rows = [
        ("file", desc["path"]),
        ("format", desc["format"]),
        ("backend", desc["backend"]),
        ("sha256", desc["sha256"][:16] + "…"),
        ("parameters", f"{desc['parameters']:,}" if desc["parameters"] is not None else "-"),
        ("model card", desc["card"] or "none"),
        ("architecture", desc["arch"] or "-"),
        ("input channels", _fmt(spec["channels"]) if spec["channels"] else "as the data"),
        ("input size", f"{spec['input_size']} px" if spec["input_size"] else "as the data"),
        (
            "mean / std",
            f"{spec['mean']} / {spec['std']}" if spec["mean"] or spec["std"] else "none (data used as [0,1])",
        ),
        ("task", desc["task"] or "from the data"),
        ("classes", ", ".join(desc["class_names"]) if desc["class_names"] else "from the data"),
        ("outputs", desc["outputs"]),
        ("gradients", _gradients(desc["gradients"])),
    ]
    for note in desc["notes"]:
        rows.append(("note", note))
    for key, value in rows:
        table.add_row(key, _t(value))
    return table


def eval_tables(results: dict[str, Any], title: str) -> list[RenderableType]:
    """The headline numbers with their intervals, a line on how they were taken, then per-class
    recall and the confusion matrix."""
    summary = Table(title=_t(title, "table.title"), title_justify="left")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_column(f"{confidence_percent(results)} interval", justify="right")
    for label, key in headline(results):
        summary.add_row(_t(label), _fmt(results.get(key)), interval_text(results, key) or "")
    summary.add_row("n", str(results["n"]), "")
    note = method_note(results)
    names = list(results["per_class_recall"])
    per_class = Table(title="Per class", title_justify="left")
    per_class.add_column("class")
    per_class.add_column("recall", justify="right")
    multi_label = results["task"].startswith("multi-label")
    if not multi_label:
        for name in names:
            per_class.add_column(_t(f"→ {name}"), justify="right")
    for i, name in enumerate(names):
        row: list[str | Text] = [_t(name), _fmt(results["per_class_recall"][name])]
        if not multi_label:
            row += [str(c) for c in results["confusion_matrix"][i]]
        per_class.add_row(*row)
    return [summary, *([_t(note, "dim")] if note else []), per_class]


def clean_interval_caption(
    results: dict[str, Any], clean: dict[str, Any], metrics: list[tuple[str, str]]
) -> str:
    """'; clean accuracy 95% interval a – b, ...; intervals: ...' for the metrics of ``clean`` that
    have an interval (empty for a report written before the intervals)."""
    level = confidence_percent(results)
    shown = [
        f"{label} {level} interval {text}"
        for label, key in metrics
        if (text := interval_text(clean, key)) is not None
    ]
    note = interval_note(results)
    return "".join(f"; {part}" for part in [*shown, *([note] if shown and note else [])])


def _compact_interval(results: dict[str, Any], metric: str) -> str:
    """'0.656–0.875' (three digits, no spaces: a narrow column), '-' where there is none."""
    return (interval_text(results, metric, 3) or "-").replace(" – ", "–")


def attack_tables(results: dict[str, Any], checks: list[dict[str, Any]], title: str) -> list[Table]:
    sweep = Table(title=_t(title, "table.title"), title_justify="left")
    with_ci = any("robust_accuracy_ci" in r for r in results["sweep"] if r["attack"] == "worst-case")
    level = confidence_percent(results)
    columns = ("eps", "×1/255", "attack", "clean", "robust", *((f"{level} CI",) if with_ci else ()))
    for column in (*columns, "success", "AUC adv", "max δ∞"):
        sweep.add_column(column, justify="left" if column == "attack" else "right")
    several = len(results["attacks"]) > 1
    for record in results["sweep"]:
        worst = record["attack"] == "worst-case"
        if not worst and not several:
            continue
        pert = record.get("perturbation", {})
        sweep.add_row(
            f"{record['eps']:.5f}",
            f"{record['eps'] * 255:.2g}",
            "[bold]all[/]" if worst else _t(record["attack"], "dim"),
            _fmt(record["clean_accuracy"], 3),
            f"[bold]{_fmt(record['robust_accuracy'], 3)}[/]" if worst else _fmt(record["robust_accuracy"], 3),
            *((_compact_interval(record, "robust_accuracy") if worst else "",) if with_ci else ()),
            _fmt(record["attack_success_rate"], 3),
            _fmt(record.get("auc_under_attack"), 3),
            _fmt(pert.get("max_linf"), 5) if pert else "",
            end_section=worst,
        )
    curve = results["curve"]
    sweep.caption = _t(
        f"n = {results['n']}; robust = clean-correct and survives every attack and restart "
        f"({', '.join(results['attacks'])}); rows per attack are cumulative; "
        f"normalised area under the curve {curve['normalised_area']:.4f}"
        + clean_interval_caption(results, results, [("clean accuracy", "clean_accuracy")]),
        "table.caption",
    )
    honesty = Table(title="Honesty checks", title_justify="left")
    honesty.add_column("check")
    honesty.add_column("result")
    honesty.add_column("detail")
    for check in checks:
        honesty.add_row(
            _t(check["check"]),
            "[green]pass[/]" if check["passed"] else "[bold red]FAIL[/]",
            _t(check["detail"]),
        )
    return [sweep, honesty]


def margin_table(results: dict[str, Any], title: str) -> Table:
    table = Table(title=_t(title, "table.title"), title_justify="left")
    table.add_column("quantile")
    table.add_column("minimal eps", justify="right")
    table.add_column("grey levels", justify="right")
    for name, value in results["quantiles"].items():
        shown = "-" if value is None else ("> eps max" if math.isinf(value) else f"{value:.5f}")
        levels = "" if value is None or math.isinf(value) else f"{value * 255:.2f}/255"
        table.add_row(_t(name), shown, levels)
    flipped = results["flipped_at_1_255"]
    table.caption = _t(
        f"{results['n_attacked']} clean-correct of {results['n']} attacked with {results['attack']}; "
        f"{results['n_censored']} not flipped within eps {results['eps_max']:.4g}; "
        f"flipped at ≤ 1/255: {_fmt(flipped, 3)}; tolerance {results['tolerance']:.2g}",
        "table.caption",
    )
    return table


def shift_tables(results: dict[str, Any], title: str) -> list[Table]:
    """Corruptions as rows, severities as columns (accuracy), then the per-corruption scores."""
    clean = results["clean"]
    severities = sorted({r["severity"] for r in results["corruptions"]})
    cells = {(r["corruption"], r["severity"]): r for r in results["corruptions"]}
    with_baseline = results["baseline"] is not None
    table = Table(title=_t(f"{title} ({results['label']})", "table.title"), title_justify="left")
    table.add_column("corruption")
    for severity in severities:
        table.add_column(f"acc s{severity}", justify="right")
    for column in ("mean BE", "BE drop") + (("nBE", "rBE") if with_baseline else ()):
        table.add_column(column, justify="right")
    for record in results["per_corruption"]:
        name = record["corruption"]
        row: list[str | Text] = [_t(name)]
        for severity in severities:
            cell = cells[(name, severity)]
            drop = cell["accuracy_drop"]
            style = "red" if drop > 0.1 else "yellow" if drop > 0.02 else ""
            value = _fmt(cell["accuracy"], 3)
            row.append(f"[{style}]{value}[/]" if style else value)
        row += [_fmt(record["balanced_error"], 3), _fmt(record["be_drop"], 3)]
        if with_baseline:
            rbe = _fmt(record["rbe"], 2)
            row += [_fmt(record["normalised_be"], 2), f"{rbe} (flagged)" if record["rbe_flagged"] else rbe]
        table.add_row(*row)
    table.caption = _t(
        f"n = {clean['n']}; clean accuracy {_fmt(clean['accuracy'], 3)}, clean BE {_fmt(clean['balanced_error'], 3)}; "
        "yellow: accuracy down > 0.02, red: > 0.1"
        + clean_interval_caption(
            results, clean, [("clean accuracy", "accuracy"), ("clean BE", "balanced_error")]
        ),
        "table.caption",
    )
    s = results["summary"]
    overview = Table(title="Shift summary", show_header=False, title_justify="left")
    overview.add_column("metric", style="bold")
    overview.add_column("value", justify="right")
    rows = [("clean balanced error", _fmt(s["clean_be"], 4))]
    be_interval = interval_text(clean, "balanced_error")
    if be_interval is not None:
        rows.append((f"clean balanced error {confidence_percent(results)} interval", be_interval))
    rows += [
        ("mean corrupted balanced error", _fmt(s["mean_be"], 4)),
        ("worst corruption", f"{s['worst_corruption']} (BE {_fmt(s['worst_corruption_be'], 4)})"),
        ("mean accuracy drop", _fmt(s["mean_accuracy_drop"], 4)),
        ("mean AUC drop", _fmt(s["mean_auc_drop"], 4)),
    ]
    if with_baseline:
        rows += [
            ("mean normalised BE vs AlexNet", _fmt(s["mean_normalised_be"], 3)),
            ("mean rBE vs AlexNet", _fmt(s["mean_rbe"], 3)),
        ]
        if s["rbe_excluded"]:
            rows.append(("rBE left out (denominator < 0.02)", ", ".join(s["rbe_excluded"])))
    else:
        rows.append(("AlexNet comparison", results["baseline_note"] or "-"))
    for key, value in rows:
        overview.add_row(key, _t(value))
    return [table, overview]


def corruption_catalogue(entries: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=_t(title, "table.title"), title_justify="left")
    for column in ("corruption", "family", "severity 1 … 5", "MedMNIST-C datasets"):
        table.add_column(column)
    for entry in entries:
        table.add_row(*(_t(entry[k]) for k in ("corruption", "family", "params", "datasets")))
    return table


def _interval(value: float, interval: list[float] | None) -> str:
    return f"{value:.2f}" + (f"  [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def intrinsic_table(results: dict[str, Any], title: str) -> Table:
    """One row per measured property, with its 95% subsampling interval where there is one."""
    table = Table(title=_t(title, "table.title"), title_justify="left", caption_justify="left")
    table.add_column("property")
    table.add_column("value", justify="right")
    table.add_column("detail")
    s, d = results["label_sharpness"], results["d_data"]
    q = s["quantiles"]
    table.add_row(
        "label sharpness K_F",
        _fmt(s["k_f"], 4),
        f"per-image 1/(nearest other-label distance): median {q['q50']:.3f}, q90 {q['q90']:.3f}, q99 {q['q99']:.3f}",
    )
    pairs = ", ".join(f"{p['a']}–{p['b']}" for p in s["closest_pairs"][:3])
    table.add_row(
        "closest cross-label pair",
        _fmt(s["closest_cross_label_distance"], 4),
        _t(
            f"images {pairs}; nearest neighbour has another label for "
            f"{_fmt(s['nearest_neighbour_label_disagreement'], 3)} of images"
        ),
    )
    table.add_row(
        "duplicates",
        str(s["exact_duplicates"]),
        f"{len(s['cross_label_duplicates'])} identical pairs with different labels",
    )
    note = _t(f"{d['n']} distinct images, {d['dims']} dims, MLE k={d['k']} ({d['normalizer']})")
    table.add_row("d_data (TwoNN)", _interval(d["twonn"], d["twonn_interval"]), note, end_section=False)
    table.add_row("d_data (MLE)", _interval(d["mle"], d["mle_interval"]), "", end_section=True)
    r = results["d_repr"]
    if r is not None:
        check = results["d_repr_le_d_data"]
        ok = check["twonn"] and check["mle"]
        verdict = ("≤ d_data", "") if ok else ("> d_data", "bold red")
        table.add_row(
            "d_repr (TwoNN)",
            _interval(r["twonn"], r["twonn_interval"]),
            Text.assemble(_t(f"{r['layer']}; "), verdict),
        )
        table.add_row("d_repr (MLE)", _interval(r["mle"], r["mle_interval"]), "", end_section=True)
    lip = results["model_smoothness"]
    if lip is not None:
        table.add_row(
            "local Lipschitz (mean)",
            f"{lip['mean']:.4g}",
            f"‖Δlogits‖₁/‖Δx‖∞ within eps {lip['eps']:g}: median {lip['median']:.3g}, "
            f"q90 {lip['q90']:.3g}, max {lip['max']:.3g} (n = {lip['n']})",
        )
    table.caption = _t("\n".join(f"• {line}" for line in results["interpretation"]), "table.caption")
    return table


def run_summary_table(sections: dict[str, dict[str, Any]], title: str) -> Table:
    """The headline numbers of every audit in a ``medaudit run`` report (``Audit.summary``)."""
    table = Table(title=_t(title, "table.title"), title_justify="left")
    table.add_column("audit")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        (name, row.label, row.text)
        for name, results in sections.items()
        if name in audits
        for row in audits.get(name).summary(results)
    ]
    previous = None
    for audit, metric, value in rows:
        table.add_row(audit if audit != previous else "", _t(metric), _t(value))
        previous = audit
    return table


def note_lines(results: dict[str, Any]) -> list[Text]:
    """A result's notes, one ``note: ...`` line each (plain text, never markup)."""
    notes = results.get("notes")
    return [Text(f"note: {line}") for line in notes] if isinstance(notes, list) else []


def data_label(data: dict[str, Any] | None) -> str:
    """A report's data as ``AuditData.describe`` names it, e.g. 'pneumoniamnist (28 px, test)'."""
    data = data or {}
    if data.get("source") == "medmnist":
        return f"{data.get('name')} ({data.get('size')} px, {data.get('split')})"
    return str(data.get("path", "data"))


def audit_tables(name: str, results: dict[str, Any], label: str) -> list[RenderableType]:
    """What the console shows for one audit's results (``Audit.tables``); ``attack-margin`` is
    the margin table. The same for the command, ``run`` and ``merge``."""
    if name == "attack-margin":
        norm = results.get("norm")
        return [margin_table(results, f"Minimal perturbation: {label}" + (f", {norm}" if norm else ""))]
    return audits.get(name).tables(results, label) if name in audits else []


def show(console: Console, renderables: list[RenderableType]) -> None:
    """Print what ``audit_tables`` returned (its text lines are ``Text``: never parsed as markup)."""
    for item in renderables:
        console.print(item)
