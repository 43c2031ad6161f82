"""PNG figures: the corruption example grid and heatmap (shift), the neighbour-distance histogram
(intrinsic), the robustness curve (attack).

matplotlib is imported inside the functions so ``import medaudit`` stays fast, and figures are
built as bare ``Figure`` objects on an Agg canvas: no pyplot state, no GUI backend, no window,
whatever ``MPLBACKEND`` says. Files are written atomically (temp file in the target folder, then
``os.replace``), like ``schema.write_json``, so a failed render never leaves a truncated PNG or
destroys an existing one. Each figure is built once by a ``_*_figure`` function and either saved
(``save_*``) or returned as PNG bytes (``*_png``) for the self-contained HTML report.

Titles and labels can hold text from the user's files (a data path, class names): every one goes
through ``escaping.mpl_text``, so a ``$`` is no mathtext (``$\\frac$`` would raise) and control
characters or undecodable file-name bytes (which the font code rejects) are shown as escapes.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medaudit.report.atomic import write_atomic
from medaudit.report.escaping import mpl_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

GRID_CELL_IN = 1.1  # inches per image cell: 28 px images upscale ~4x with nearest, 15 rows stay readable
GRID_DPI = 100
HEATMAP_DPI = 120
CURVE_DPI = 120
NAN_COLOUR = "#d9d9d9"  # light grey for missing cells, distinct from every colormap end


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A pyplot-free figure on the Agg canvas, so nothing can open a window or leak global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_atomic(fig: Figure, path: Path, dpi: int) -> None:
    """Render completely first, then write atomically: the target is either old or complete."""
    write_atomic(path, _png_bytes(fig, dpi))


def _png_bytes(fig: Figure, dpi: int) -> bytes:
    """Render to memory, for callers that embed the figure (HTML data URIs) rather than write a file."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _as_image(image: np.ndarray, what: str) -> np.ndarray:
    """Validate a uint8 HWC image (C=1 or 3) and return HW for grey, HWC for RGB."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"{what}: expected an HWC image with 1 or 3 channels, got shape {image.shape}")
    return image[:, :, 0] if image.shape[2] == 1 else image


def _grid_figure(
    clean: np.ndarray, rows: dict[str, list[np.ndarray]], title: str, columns: list[str] | None = None
) -> Figure:
    """Build the corruption grid; kept separate from saving so tests can inspect the artists."""
    if not rows:
        raise ValueError("rows: need at least one corruption")
    lengths = {len(images) for images in rows.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(
            f"rows: every corruption needs the same, non-zero number of severities, got {lengths}"
        )
    n_sev = lengths.pop()
    base = _as_image(clean, "clean")
    images = {
        name: [_as_image(im, f"{name} severity {i + 1}") for i, im in enumerate(ims)]
        for name, ims in rows.items()
    }
    for name, ims in images.items():
        for i, im in enumerate(ims):
            if im.shape != base.shape:
                raise ValueError(f"{name} severity {i + 1}: shape {im.shape} differs from clean {base.shape}")

    n_rows, n_cols = len(images), 1 + n_sev
    label_in = 0.08 * max(len(name) for name in images) + 0.3  # room for horizontal row labels
    fig = _new_figure((n_cols * GRID_CELL_IN + label_in, n_rows * GRID_CELL_IN + 0.8))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    if columns is not None and len(columns) != n_sev:
        raise ValueError(f"columns: {len(columns)} labels for {n_sev} images per row")
    col_labels = ["clean"] + (columns or [f"severity {s}" for s in range(1, n_sev + 1)])
    for r, (name, ims) in enumerate(images.items()):
        for c, im in enumerate([base, *ims]):
            ax = axes[r, c]
            if im.ndim == 2:  # grey: fixed 0..255 scale so severities compare honestly, not per-image stretch
                ax.imshow(im, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.imshow(im, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(mpl_text(col_labels[c]), fontsize=9)
        axes[r, 0].set_ylabel(mpl_text(name), rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(mpl_text(title), fontsize=11)
    return fig


def save_corruption_grid(
    path: Path,
    clean: np.ndarray,
    rows: dict[str, list[np.ndarray]],
    title: str,
    columns: list[str] | None = None,
) -> None:
    """Write one image under every corruption and severity, so readers see what each shift looks like.

    ``clean`` is uint8 HWC (C=1 or 3); ``rows`` maps corruption name -> images at severities 1..N
    (N=5 for MedMNIST-C), each the same shape as ``clean``. One row per corruption, in dict order.
    ``columns`` labels the N columns (default "severity k"; e.g. "strength 0.5" for artifacts).
    """
    _save_atomic(_grid_figure(clean, rows, title, columns), path, GRID_DPI)


def corruption_grid_png(clean: np.ndarray, rows: dict[str, list[np.ndarray]], title: str) -> bytes:
    """The corruption grid of ``save_corruption_grid`` as PNG bytes, for embedding in a report."""
    return _png_bytes(_grid_figure(clean, rows, title), GRID_DPI)


def _format_cell(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def _heatmap_figure(
    values: np.ndarray, row_labels: list[str], col_labels: list[str], title: str, value_label: str
) -> Figure:
    """Build the heatmap; kept separate from saving so tests can inspect norm, colours and text."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    data = np.asarray(values, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"values: expected a 2-D array, got shape {data.shape}")
    if data.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"values shape {data.shape} does not match {len(row_labels)} row and {len(col_labels)} column labels"
        )
    finite = np.isfinite(data)
    lo = float(data[finite].min()) if finite.any() else 0.0
    hi = float(data[finite].max()) if finite.any() else 0.0
    # positive = worse (red). Mixed signs: diverging map centred at 0 with symmetric limits, so equal
    # colour intensity means equal magnitude. One sign: sequential map anchored at 0.
    if lo < 0 < hi:
        bound = max(-lo, hi)
        cmap_name, vmin, vmax = "RdBu_r", -bound, bound
    elif hi <= 0 and lo < 0:
        cmap_name, vmin, vmax = "Blues_r", lo, 0.0
    else:
        cmap_name, vmin, vmax = "Reds", 0.0, hi if hi > 0 else 1.0
    cmap = colormaps[cmap_name].with_extremes(bad=NAN_COLOUR)
    norm = Normalize(vmin=vmin, vmax=vmax)

    n_rows, n_cols = data.shape
    label_in = 0.08 * max((len(s) for s in row_labels), default=0) + 0.3
    fig = _new_figure((max(4.0, 0.75 * n_cols + label_in + 1.5), max(3.0, 0.42 * n_rows + 1.6)))
    ax = fig.add_subplot()
    mesh = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    decimals = 3 if max(abs(lo), abs(hi)) < 1 else 2
    for r in range(n_rows):
        for c in range(n_cols):
            value = data[r, c]
            if not math.isfinite(value):
                continue  # missing: grey cell, no text
            red, green, blue, _ = cmap(norm(value))
            luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
            colour = "black" if luminance > 0.5 else "white"
            ax.text(c, r, _format_cell(value, decimals), ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(n_cols), [mpl_text(s) for s in col_labels])
    ax.set_yticks(range(n_rows), [mpl_text(s) for s in row_labels])
    if max((len(s) for s in col_labels), default=0) > 4:
        ax.tick_params(axis="x", labelrotation=40)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    ax.tick_params(length=0)
    ax.set_title(mpl_text(title), fontsize=11)
    fig.colorbar(mesh, ax=ax, label=mpl_text(value_label))
    return fig


def save_heatmap(
    path: Path, values: np.ndarray, row_labels: list[str], col_labels: list[str], title: str, value_label: str
) -> None:
    """Write an annotated heatmap (e.g. accuracy drop per corruption x severity; positive = worse).

    Mixed-sign values get a diverging colour scale centred at 0; NaN/inf cells are grey and unlabelled.
    """
    _save_atomic(_heatmap_figure(values, row_labels, col_labels, title, value_label), path, HEATMAP_DPI)


def heatmap_png(
    values: np.ndarray, row_labels: list[str], col_labels: list[str], title: str, value_label: str
) -> bytes:
    """The heatmap of ``save_heatmap`` as PNG bytes, for embedding in a report."""
    return _png_bytes(_heatmap_figure(values, row_labels, col_labels, title, value_label), HEATMAP_DPI)


def _distance_histogram_figure(series: dict[str, np.ndarray], title: str, xlabel: str) -> Figure:
    """Build the overlaid histograms; shared by the file and the in-memory variant."""
    fig = _new_figure((6.4, 4.0))
    ax = fig.add_subplot()
    finite = [np.asarray(values, dtype=float) for values in series.values()]
    finite = [values[np.isfinite(values)] for values in finite]
    pooled = (
        np.concatenate([v for v in finite if len(v)]) if any(len(v) for v in finite) else np.array([0.0, 1.0])
    )
    bins = np.linspace(0.0, float(pooled.max()) * 1.02 + 1e-12, 50)
    for (name, _), values in zip(series.items(), finite, strict=True):
        ax.hist(values, bins=bins.tolist(), alpha=0.55, label=mpl_text(f"{name} (n = {len(values)})"))
    ax.set_title(mpl_text(title), fontsize=10)
    ax.set_xlabel(mpl_text(xlabel))
    ax.set_ylabel("images")
    ax.legend(frameon=False)
    return fig


def save_distance_histogram(path: Path, series: dict[str, np.ndarray], title: str, xlabel: str) -> None:
    """Overlaid histograms of nearest-neighbour distances (same label vs other label).

    Where the two overlap, images sit closer to a differently-labelled image
    than to their own class: the data's label sharpness shows as the left tail
    of the other-label histogram.
    """
    _save_atomic(_distance_histogram_figure(series, title, xlabel), path, HEATMAP_DPI)


def _curve_points(records: list[dict[str, Any]], attack: str) -> tuple[list[float], list[float]]:
    """(eps, robust accuracy) for one attack's records, starting at eps 0 with the clean accuracy."""
    rows = sorted((r for r in records if r["attack"] == attack), key=lambda r: r["eps"])
    eps = [float(r["eps"]) for r in rows]
    acc = [float(r["robust_accuracy"]) for r in rows]
    if rows and eps[0] > 0 and rows[0].get("clean_accuracy") is not None:
        eps, acc = [0.0, *eps], [float(rows[0]["clean_accuracy"]), *acc]
    return eps, acc


def _to_grey_levels(eps: ArrayLike) -> np.ndarray:
    """eps in [0, 1] pixel units -> 8-bit grey levels (the curve's top axis)."""
    return np.asarray(eps) * 255


def _from_grey_levels(grey: ArrayLike) -> np.ndarray:
    return np.asarray(grey) / 255


def _robustness_curve_figure(records: list[dict[str, Any]], title: str) -> Figure:
    """Build the curve from ``results.sweep`` records (one per eps and attack, plus 'worst-case').

    Per-attack rows are cumulative (robust after that attack and the ones before it), so the thin
    lines show how much each attack adds; the thick line is the worst case the report quotes.
    """
    if not records:
        raise ValueError("records: need at least one sweep record")
    attacks = list(dict.fromkeys(r["attack"] for r in records))
    if "worst-case" not in attacks:
        raise ValueError("records: no 'worst-case' record (expected the sweep of `medaudit attack`)")
    norm = str(records[0].get("norm", "linf"))
    fig = _new_figure((6.4, 4.2))
    ax = fig.add_subplot()
    for name in attacks:
        if name == "worst-case":
            continue
        eps, acc = _curve_points(records, name)
        ax.plot(eps, acc, linewidth=1.0, alpha=0.7, marker=".", label=mpl_text(f"after {name} (cumulative)"))
    eps, acc = _curve_points(records, "worst-case")
    ax.plot(eps, acc, linewidth=2.6, color="black", marker="o", label="worst case (all attacks)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0.0)
    ax.grid(alpha=0.3)
    ax.set_xlabel(mpl_text(f"eps ({norm}, [0, 1] pixel units)"))
    ax.set_ylabel("robust accuracy")
    top = ax.secondary_xaxis("top", functions=(_to_grey_levels, _from_grey_levels))
    top.set_xlabel("eps × 255 (8-bit grey levels)" if norm == "linf" else "eps × 255")
    ax.set_title(mpl_text(title), fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return fig


def save_robustness_curve(path: Path, records: list[dict[str, Any]], title: str) -> None:
    """Write robust accuracy against eps (worst case thick, per attack thin) from ``results.sweep``."""
    _save_atomic(_robustness_curve_figure(records, title), path, CURVE_DPI)


def robustness_curve_png(records: list[dict[str, Any]], title: str) -> bytes:
    """Robust accuracy against eps as PNG bytes, for embedding in a report (see ``save_robustness_curve``)."""
    return _png_bytes(_robustness_curve_figure(records, title), CURVE_DPI)


def _reliability_figure(reliability: dict[str, Any], ece: float | None, title: str) -> Figure:
    """Accuracy per confidence bin against the diagonal (perfect calibration), from the eval
    result's ``reliability`` table; below it, how many decisions fall in each bin.

    The bars are the bins' accuracies (``ax.containers[0]``, the only patches of the top axes);
    the calibration gap of each bin, from its accuracy to its mean confidence, is drawn over them
    as a hatched red box (one ``PolyCollection``), as in Guo et al. 2017: a box above a bar is an
    overconfident bin, one inside it an underconfident bin; the boxes' heights, weighted by the
    counts below, average to the ECE. Empty bins (null) are left blank."""
    from matplotlib.collections import PolyCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    edges = np.asarray(reliability["edges"], dtype=float)
    if edges.ndim != 1 or len(edges) < 2:
        raise ValueError("reliability: need at least two bin edges")
    accuracy = np.array([math.nan if a is None else a for a in reliability["accuracy"]], dtype=float)
    confidence = np.array([math.nan if c is None else c for c in reliability["confidence"]], dtype=float)
    count = np.asarray(reliability["count"], dtype=float)
    if not len(accuracy) == len(confidence) == len(count) == len(edges) - 1:
        raise ValueError("reliability: edges, count, confidence and accuracy do not match in length")
    left, width = edges[:-1], np.diff(edges)
    fig = _new_figure((5.2, 5.6))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="dimgrey", linewidth=1, zorder=4)
    top.bar(left, np.nan_to_num(accuracy), width=width, align="edge", edgecolor="black", linewidth=0.5,
            color="#4c72b0", label="accuracy in bin")  # fmt: skip
    boxes = [
        [(x, a), (x + w, a), (x + w, c), (x, c)]
        for x, w, a, c in zip(left, width, accuracy, confidence, strict=True)
        if math.isfinite(a) and math.isfinite(c)
    ]
    gap_fill, gap_edge = (0.77, 0.31, 0.32, 0.3), "#c44e52"
    top.add_collection(
        PolyCollection(boxes, facecolor=gap_fill, edgecolor=gap_edge, hatch="//", linewidth=1, zorder=3)
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    shown = "" if ece is None or not math.isfinite(ece) else f" (ECE {ece:.4f})"
    top.set_title(mpl_text(title + shown), fontsize=10)
    handles = [
        Patch(facecolor="#4c72b0", edgecolor="black", linewidth=0.5, label="accuracy in bin"),
        Patch(
            facecolor=gap_fill,
            edgecolor=gap_edge,
            hatch="//",
            linewidth=1,
            label="gap: accuracy to mean confidence",
        ),
        Line2D([], [], linestyle="--", color="dimgrey", linewidth=1, label="perfect calibration"),
    ]
    top.legend(handles=handles, frameon=False, fontsize=8, loc="upper left")
    top.grid(alpha=0.3)
    bottom.bar(left, count, width=width, align="edge", color="#8c8c8c", edgecolor="black", linewidth=0.5)
    bottom.set_ylabel("decisions")
    bottom.set_xlabel(mpl_text(str(reliability.get("binning", "confidence"))))
    return fig


def reliability_diagram_png(reliability: dict[str, Any], ece: float | None, title: str) -> bytes:
    """The reliability diagram of an eval result as PNG bytes (``EvalAudit.figures``: the HTML
    report of ``run`` and ``eval --save-figures``)."""
    return _png_bytes(_reliability_figure(reliability, ece, title), CURVE_DPI)


def tradeoff_png(results: dict[str, Any], title: str) -> bytes:
    """``features``: the trade-off rows as grouped bars, one colour per model (every row is a
    number in [0, 1]; missing ones are left out)."""
    from medaudit.report.feature_tables import models_of, tradeoff_rows

    models = models_of(results)
    columns = [dict(tradeoff_rows(m)) for m in models]
    labels = [label for label, _ in tradeoff_rows(models[0])] if models else []
    labels = [lab for lab in labels if any(isinstance(c.get(lab), int | float) for c in columns)]
    fig = _new_figure((7.0, 0.45 * max(len(labels), 2) + 1.2))
    ax = fig.add_subplot()
    height = 0.8 / max(len(models), 1)
    for index, (model, column) in enumerate(zip(models, columns, strict=True)):
        values = [
            float(column[lab]) if isinstance(column.get(lab), int | float) else np.nan for lab in labels
        ]
        positions = np.arange(len(labels)) + index * height
        ax.barh(positions, values, height=height, label=mpl_text(str(model.get("label"))))
    ax.set_yticks(np.arange(len(labels)) + height * (len(models) - 1) / 2)
    ax.set_yticklabels([mpl_text(lab) for lab in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(mpl_text(title), fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return _png_bytes(fig, CURVE_DPI)


def saliency_examples_png(examples: dict[str, np.ndarray], label: str) -> bytes:
    """``features``: for a few images, the image, its attribution map, and the map on the
    perturbed image, with their rank correlation (as in the paper's Fig. 1)."""
    images, clean, perturbed = examples["images"], examples["clean"], examples["perturbed"]
    correlations = examples["correlations"]
    n = len(images)
    fig = _new_figure((3 * 1.6, n * 1.6))
    for row in range(n):
        image = np.asarray(images[row], dtype=float)
        panels = (
            (image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1), "image", "gray"),
            (clean[row], "attribution", "magma"),
            (perturbed[row], f"perturbed (rho {correlations[row]:.2f})", "magma"),
        )
        for column, (picture, name, cmap) in enumerate(panels):
            ax = fig.add_subplot(n, 3, row * 3 + column + 1)
            ax.imshow(picture, cmap=cmap, interpolation="nearest")
            ax.set_axis_off()
            if row == 0 or column == 2:
                ax.set_title(mpl_text(name), fontsize=7)
    fig.suptitle(mpl_text(f"saliency on x and on perturbed x: {label}"), fontsize=9)
    return _png_bytes(fig, GRID_DPI)
