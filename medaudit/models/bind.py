"""Check a loaded model against the audit data before any audit runs.

Turns every shape, class and output problem into a one-line error up front,
instead of a traceback deep inside an audit, and fills in what the model file
left open (task, class names, whether outputs are probabilities).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from medaudit.data import AuditData
from medaudit.data.dataset import class_key
from medaudit.errors import MedauditError, ModelLoadError, ModelRuntimeError, ShapeMismatch, first_line
from medaudit.models.card import ASSUMED_UNIT_INPUT
from medaudit.models.formats import EXPORT_FIX, FixedBatch
from medaudit.models.onnx import TWIN_TOLERANCE
from medaudit.models.wrapper import AuditModel, Preprocess
from medaudit.task import Task

PROBE_SIZE = 64
"""Images the model is probed on, spread evenly over the data (not the first ones: class-sorted
data such as an image folder would give a probe of one class)."""
RANGE_TOLERANCE = 1e-6
"""How far outside [0, 1] a probability may stray (float rounding)."""
SUM_TOLERANCE = 2e-3
"""How far from 1 a row of probabilities may sum (float32 is ~1e-6; half-precision softmax ~1e-3)."""
SIGMOID_MIN_ROWS = 8
"""Sigmoid outputs are only recognised on at least this many probe images."""
SIGMOID_MIN_SPREAD = 0.5
"""... and only when they spread over at least this much of [0, 1] (max - min)."""
CLASS_NAMES_SHOWN = 5
NORMALISATION_MARGIN = 0.15
"""A common normalisation is suggested only when its balanced accuracy on the probe images beats
both the [0, 1] input's and chance by this much."""
NORMALISATION_MIN_IMAGES = 32
"""... and only on at least this many labelled probe images (fewer make the accuracies noise)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def probe(model: AuditModel, x: torch.Tensor) -> torch.Tensor:
    """Raw network output on a few images. The first forward pass failing is read as the model
    and the data not fitting (exit 2, with the fix); a wrong output type stays a model error."""
    try:
        with torch.inference_mode():
            return model.run_network(model.network, model.preprocess(x.to(model.device)))
    except ModelRuntimeError as exc:
        cause = exc.__cause__
        if not isinstance(cause, RuntimeError | ValueError | IndexError | AssertionError):
            raise
        shape = "x".join(str(s) for s in x.shape[1:])
        raise ShapeMismatch(
            f"the model {model.info.path} cannot take the data's {shape} (C x H x W) images "
            f"({first_line(cause)}): set --channels/--input-size or a model card to match the model's input"
        ) from None


def probe_indices(n: int, size: int = PROBE_SIZE) -> torch.Tensor:
    """``min(size, n)`` distinct indices spread evenly over ``0..n-1``, first and last included."""
    if n <= size:
        return torch.arange(n)
    return torch.linspace(0, n - 1, size, dtype=torch.float64).round().long()


def _in_unit_interval(raw: torch.Tensor) -> bool:
    return raw.numel() > 0 and bool(raw.min() >= -RANGE_TOLERANCE and raw.max() <= 1 + RANGE_TOLERANCE)


def _sigmoid_shaped(raw: torch.Tensor, task: Task) -> bool:
    """Outputs read per column through a sigmoid: multi-label, or one binary column."""
    return task is Task.MULTI_LABEL or raw.shape[1] == 1


def looks_like_probabilities(raw: torch.Tensor, task: Task) -> bool:
    """Whether the raw outputs on the probe images are certainly probabilities, not logits.

    Every value must lie in [0, 1] on every probe image, and then:

    * softmax (single-label, at least 2 columns): every row sums to 1 (within ``SUM_TOLERANCE``).
      A row of logits that happens to do so is a coincidence no real model repeats on every row;
    * sigmoid (multi-label, or a single binary column): at least ``SIGMOID_MIN_ROWS`` probe images
      and the values spread at least ``SIGMOID_MIN_SPREAD`` (max - min over all of them). One
      logit per image that stays in [0, 1] is otherwise plausible (an undecided model's logits
      near 0), and reading such logits as probabilities would flip predictions; a real logit model
      whose outputs spread that far yet never leave [0, 1] would predict the positive class for
      every image.

    Anything else counts as logits (see ``_ambiguous`` for the warning on near misses).
    """
    if raw.ndim != 2 or not _in_unit_interval(raw):
        return False
    if _sigmoid_shaped(raw, task):
        return len(raw) >= SIGMOID_MIN_ROWS and float(raw.max() - raw.min()) >= SIGMOID_MIN_SPREAD
    return bool(((raw.sum(dim=1) - 1).abs() <= SUM_TOLERANCE).all())


def _ambiguous(raw: torch.Tensor, task: Task) -> bool:
    """Sigmoid-shaped outputs all in [0, 1] that ``looks_like_probabilities`` cannot call."""
    return _sigmoid_shaped(raw, task) and _in_unit_interval(raw) and not looks_like_probabilities(raw, task)


def _decide_outputs(model: AuditModel, raw: torch.Tensor) -> list[str]:
    """Set ``model.outputs`` from the declaration and the probe; return warnings.

    Conclusive evidence beats the card: a declared "logits" model whose every probe row is a
    probability distribution is read as probabilities (its logarithm as logits), because reading
    probabilities as logits silently flattens the loss every attack climbs and skews calibration.
    A declared "probabilities" model with outputs outside [0, 1] is read as logits.
    """
    assert model.task is not None
    task, declared, n = model.task, model.outputs, len(raw)
    kind = "sigmoid probabilities" if _sigmoid_shaped(raw, task) else "probability rows summing to 1"
    where = f"on all {n} probe image{'s' if n != 1 else ''}"
    fix = 'declare "outputs" in the model card to silence this'
    if looks_like_probabilities(raw, task):
        if declared is None:
            model.outputs = "probabilities"
            return [
                f"the model seems to output probabilities, not logits ({kind} {where}): "
                f"medaudit uses their logarithm as logits ({fix})"
            ]
        if declared == "logits":
            model.outputs = "probabilities"
            return [
                f'the model card says "outputs": "logits" but the model returns {kind} {where}: '
                'medaudit reads them as probabilities (their logarithm as logits); set "outputs": '
                '"probabilities" in the card'
            ]
        return []
    if declared == "probabilities" and not _in_unit_interval(raw):
        model.outputs = "logits"
        low, high = float(raw.min()), float(raw.max())
        return [
            f'the model card says "outputs": "probabilities" but the model returns values from '
            f'{low:.3g} to {high:.3g}: medaudit reads them as logits; set "outputs": "logits" in the card'
        ]
    if declared is None and _ambiguous(raw, task):
        return [
            f"the model's outputs lie in [0, 1] {where} but are too few or too alike to tell "
            f"sigmoid probabilities from logits: medaudit reads them as logits ({fix})"
        ]
    return []


def _names(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:CLASS_NAMES_SHOWN])
    return shown + (", ..." if len(names) > CLASS_NAMES_SHOWN else "")


def _data_count_is_known(data: AuditData) -> bool:
    """False when the data's class count was only inferred from its labels.

    MedMNIST (its INFO) and image folders (one sub-folder per class) know their classes; an npz
    without ``class_names`` gets '0'..'C-1' from its largest label, which a test set lacking the
    last class undercounts.
    """
    if data.task is Task.MULTI_LABEL or data.identity.get("source") in ("medmnist", "folder"):
        return True
    return not _unnamed(data)


def _unnamed(data: AuditData) -> bool:
    """The data's classes are only numbered ('0'..'C-1': an npz without ``class_names``)."""
    return data.class_names == tuple(str(i) for i in range(data.num_classes))


def _check_class_names(model: AuditModel, data: AuditData) -> list[str]:
    """Say when the card's class names and the data's are not the same list: relabelled to the
    card's order on loading (``DataSpec.class_order``), or other names, read by position."""
    relabelled = data.identity.get("relabelled")
    if relabelled:
        return [
            f"the data names the model's classes in another order ({_names(tuple(relabelled['data_classes']))}; "
            f"the card: {_names(tuple(relabelled['model_classes']))}): its labels were renumbered to the card's order"
        ]
    card = model.class_names
    if not card or _unnamed(data):
        return []
    if [class_key(n) for n in card] != [class_key(n) for n in data.class_names]:
        return [
            f"the data's classes ({_names(data.class_names)}) are not the card's ({_names(card)}): "
            "data label i is read as the model's class i; check that they mean the same"
        ]
    return []


def _check_class_counts(model: AuditModel, data: AuditData, columns: int) -> list[str]:
    """Model outputs, card class names and data classes must agree in number; return warnings.

    A single binary column counts as 2 classes (a card may then name 2 classes, or just the
    positive one). The data's count is an error only where it is known (``_data_count_is_known``);
    an inferred count below the model's is a warning.
    """
    assert model.task is not None
    single = model.task.single_label
    outputs = 2 if columns == 1 and single else columns
    if single and columns == 1 and model.class_names is not None and len(model.class_names) == 1:
        model.class_names = None  # the positive class only: the data names both
    card = model.class_names
    card_part = f"its card names {len(card)} ({_names(card)})" if card else "its card names no classes"
    if not single:
        labels = int(data.labels.shape[1])
        if outputs != labels or (card and len(card) != outputs):
            raise ShapeMismatch(
                f"the data has {labels} labels per image but the model outputs {outputs} "
                f"and {card_part}: use data with the model's labels, or fix the card's class_names"
            )
        return []
    top = int(data.labels.max())
    count, known = data.num_classes, _data_count_is_known(data)
    if top >= outputs:
        raise ShapeMismatch(
            f"labels go up to {top} but the model has {outputs} classes ({card_part}, the data has "
            f"{count} ({_names(data.class_names)})): use data with the model's classes"
        )
    if (card and len(card) != outputs) or (known and count != outputs):
        data_part = f"the data has {count} ({_names(data.class_names)})"
        if not known:
            data_part = f"the data's labels go up to {top}"
        hint = "use data with the model's classes"
        if data.identity.get("source") == "folder":
            hint += " (give every class a sub-folder, empty if this split has none of it)"
        raise ShapeMismatch(
            f"the model outputs {outputs} classes, {card_part} and {data_part}: {hint}, "
            "or fix the card's class_names"
        )
    if not known and count < outputs:
        return [
            f"the data names no classes and its labels go up to {top}, but the model outputs "
            f"{outputs} classes: medaudit takes classes {count}..{outputs - 1} to be absent from "
            "this data (save class_names in the .npz to have the count checked)"
        ]
    return []


def bind_model(model: AuditModel, data: AuditData) -> list[str]:
    """Validate ``model`` on ``data``; set task, class names, outputs; return warnings.

    Raises ShapeMismatch when the model's outputs, its card's class names and the data's classes
    disagree in number (a single binary logit counts as 2 classes), and reads probability
    outputs as documented in ``looks_like_probabilities``.
    """
    warnings: list[str] = list(model.info.warnings)
    network = model.network
    if model.info.format == "export" and isinstance(network, FixedBatch) and not network.vectorised:
        warnings.append(
            f"{model.info.path} was exported for batch size {network.batch} and runs {network.batch} "
            f"image(s) per call, which is slow (see medaudit info): export it with {EXPORT_FIX}"
        )
    model.preprocess.check(data.channels, data.size)
    x = data.float_at(probe_indices(data.n))
    raw = probe(model, x).float().cpu()
    if raw.ndim == 1:
        raw = raw[:, None]
    if raw.ndim != 2:
        raise ShapeMismatch(f"the model returned shape {tuple(raw.shape)}: expected N x classes logits")
    if not torch.isfinite(raw).all():
        raise ModelLoadError(
            "the model returned NaN or infinite outputs on the probe images: check its weights and preprocessing (--mean/--std)"
        )
    if model.task is not None and model.task.single_label != data.task.single_label:
        raise ShapeMismatch(
            f"the model is {model.task.value} but the data is {data.task.value}: use matching data"
        )
    if model.task is None:
        model.task = data.task
    outputs = 2 if raw.shape[1] == 1 and model.task.single_label else raw.shape[1]
    warnings.extend(_check_class_counts(model, data, raw.shape[1]))
    warnings.extend(_check_class_names(model, data))
    warnings.extend(_decide_outputs(model, raw))
    if model.class_names is None:
        names = list(data.class_names[:outputs])
        names += [str(i) for i in range(len(names), outputs)]
        model.class_names = tuple(names)
    if model.spec.mean is None and model.spec.std is None:  # load_model noted the [0,1] assumption
        warnings.extend(_suggest_normalisation(model, data, x, raw))
    if model.is_onnx and model.twin is not None:
        warnings.extend(_verify_twin(model, model.twin, x))
    model.warnings = warnings
    return warnings


def _flag(values: tuple[float, ...]) -> str:
    """As --mean/--std take them: numbers separated by commas."""
    return ",".join(f"{v:g}" for v in values)


def _candidate_normalisations(
    model: AuditModel, data: AuditData, x: torch.Tensor
) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """(mean, std) pairs worth trying: 0.5/0.5, ImageNet's for 3-channel inputs, and the probe
    images' own per-channel statistics (what a MedMNIST-style ``Normalize`` computed from the
    training set comes close to), rounded as they would be typed."""
    candidates: list[tuple[tuple[float, ...], tuple[float, ...]]] = [((0.5,), (0.5,))]
    if model.spec.channels == 3 or data.channels == 3:
        candidates.append((IMAGENET_MEAN, IMAGENET_STD))
    own_mean = x.mean(dim=(0, 2, 3))
    own_std = x.std(dim=(0, 2, 3))
    channels = model.spec.channels
    if channels is not None and channels != len(own_mean):
        own_mean, own_std = own_mean.mean().view(1), own_std.mean().view(1)
    if bool((own_std > 1e-3).all()):
        mean = tuple(round(float(v), 3) for v in own_mean)
        std = tuple(round(float(v), 3) for v in own_std)
        if len(set(mean)) == 1 and len(set(std)) == 1:
            mean, std = mean[:1], std[:1]
        if (mean, std) not in candidates:
            candidates.append((mean, std))
    return candidates


def _balanced_accuracy(model: AuditModel, raw: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Mean recall over the classes present in ``labels`` (chance is 1 / their count whatever the
    class balance); None when the outputs cannot be scored."""
    logits = model.adapt(raw.float().cpu())
    if logits.shape[0] != len(labels) or not torch.isfinite(logits).all():
        return None
    hits = logits.argmax(dim=1) == labels
    return float(torch.stack([hits[labels == c].float().mean() for c in labels.unique()]).mean())


def _suggest_normalisation(
    model: AuditModel, data: AuditData, x: torch.Tensor, raw: torch.Tensor
) -> list[str]:
    """Warn when no mean/std is known and a common one makes the model far more accurate.

    Balanced accuracy on the probe images, as given and under each candidate
    (``_candidate_normalisations``, one forward pass each); the best must beat both the given
    input's and chance (1 / the classes present) by ``NORMALISATION_MARGIN``, so an untrained or
    poor model, which any input shift merely reshuffles, is not flagged. Only single-label data
    with at least ``NORMALISATION_MIN_IMAGES`` probe images and two classes is checked. The audit
    itself is unchanged: this only names the flags that would fit a model trained on normalised inputs.
    """
    labels = data.labels[probe_indices(data.n)]
    if not data.task.single_label or len(x) < NORMALISATION_MIN_IMAGES or len(labels.unique()) < 2:
        return []
    given = _balanced_accuracy(model, raw, labels)
    if given is None:
        return []
    floor = max(given, 1 / len(labels.unique())) + NORMALISATION_MARGIN
    best: tuple[float, tuple[float, ...], tuple[float, ...]] | None = None
    for mean, std in _candidate_normalisations(model, data, x):
        try:
            preprocess = Preprocess(replace(model.spec, mean=mean, std=std)).to(model.device)
            with torch.inference_mode():
                out = model.run_network(model.network, preprocess(x.to(model.device)))
            score = _balanced_accuracy(model, out, labels)
        except (MedauditError, RuntimeError, ValueError):
            continue  # a candidate the model cannot take is no suggestion
        if score is not None and (best is None or score > best[0]):
            best = (score, mean, std)
    if best is None or best[0] < floor:
        return []
    score, mean, std = best
    return [
        f"{ASSUMED_UNIT_INPUT}, but with --mean {_flag(mean)} --std {_flag(std)} the model gets "
        f"{score:.2f} balanced accuracy on {len(x)} probe images against {given:.2f} as given: pass "
        "those flags (or put preprocessing in the model card) if it was trained on normalised inputs"
    ]


def _verify_twin(model: AuditModel, twin: nn.Module, x: torch.Tensor) -> list[str]:
    """Use the converted graph for gradients only if it matches onnxruntime."""
    with torch.inference_mode():
        pre = model.preprocess(x.to(model.device))
        theirs = model.network(pre).float().cpu()
        try:
            ours = twin(pre).float().cpu()
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            model.info.notes.append(f"black-box only: the converted graph fails to run ({first_line(exc)})")
            return []
    if ours.shape != theirs.shape:
        model.info.notes.append(
            "black-box only: the converted graph's output shape differs from onnxruntime's"
        )
        return []
    diff = float((ours - theirs).abs().max())
    scale = max(1.0, float(theirs.abs().max()))
    model.info.twin_max_abs_diff = diff
    if diff <= TWIN_TOLERANCE * scale:
        model.twin_verified = True
        model.info.notes.append(
            f"gradients through a converted torch graph (max |logit diff| vs onnxruntime {diff:.2e})"
        )
        return []
    model.info.notes.append(f"black-box only: converted graph differs from onnxruntime by {diff:.3g}")
    return [
        f"the ONNX model's torch conversion differs from onnxruntime by {diff:.3g}: white-box attacks are off"
    ]
