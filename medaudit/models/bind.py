"""Check a loaded model against the audit data before any audit runs.

Turns every shape, class and output problem into a one-line error up front,
instead of a traceback deep inside an audit, and fills in what the model file
left open (task, class names, whether outputs are probabilities).
"""

from __future__ import annotations

import torch

from medaudit.data import AuditData
from medaudit.errors import ModelLoadError, ShapeMismatch
from medaudit.models.onnx import TWIN_TOLERANCE
from medaudit.models.wrapper import AuditModel
from medaudit.task import Task

PROBE_SIZE = 64


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def probe(model: AuditModel, x: torch.Tensor) -> torch.Tensor:
    """Raw network output on a few images, with shape errors made readable."""
    try:
        with torch.inference_mode():
            return model.network(model.preprocess(x.to(model.device)))
    except (RuntimeError, ValueError, IndexError, AssertionError) as exc:
        shape = "x".join(str(s) for s in x.shape[1:])
        raise ShapeMismatch(
            f"the model cannot take the data's {shape} (C x H x W) images ({_first_line(exc)}): "
            "set --channels/--input-size or a model card to match the model's input"
        ) from None


def looks_like_probabilities(raw: torch.Tensor, task: Task) -> bool:
    """Outputs in [0, 1] that sum to 1 per row (or a single column in [0, 1])."""
    if raw.numel() == 0 or raw.min() < 0 or raw.max() > 1:
        return False
    if task is Task.MULTI_LABEL or raw.shape[1] == 1:
        return task is not Task.MULTI_LABEL or bool((raw > 0).all() and (raw < 1).all())
    return bool(torch.allclose(raw.sum(dim=1), torch.ones(len(raw)), atol=1e-4))


def bind_model(model: AuditModel, data: AuditData) -> list[str]:
    """Validate ``model`` on ``data``; set task, class names, outputs; return warnings."""
    warnings: list[str] = []
    model.preprocess.check(data.channels, data.size)
    x = data.float_images(0, min(PROBE_SIZE, data.n))
    raw = probe(model, x).float().cpu()
    if raw.ndim == 1:
        raw = raw[:, None]
    if raw.ndim != 2:
        raise ShapeMismatch(f"the model returned shape {tuple(raw.shape)}: expected N x classes logits")
    if not torch.isfinite(raw).all():
        raise ModelLoadError(
            "the model returned NaN or infinite outputs on the first images: check its weights and preprocessing (--mean/--std)"
        )
    if model.task is not None and model.task.single_label != data.task.single_label:
        raise ShapeMismatch(
            f"the model is {model.task.value} but the data is {data.task.value}: use matching data"
        )
    if model.task is None:
        model.task = data.task
    outputs = 2 if raw.shape[1] == 1 and model.task.single_label else raw.shape[1]
    if model.task.single_label:
        top = int(data.labels.max())
        if top >= outputs:
            raise ShapeMismatch(
                f"labels go up to {top} but the model has {outputs} classes: use data with the model's classes"
            )
    elif outputs != data.labels.shape[1]:
        raise ShapeMismatch(
            f"the data has {data.labels.shape[1]} labels per image but the model outputs {outputs}"
        )
    if model.outputs is None and looks_like_probabilities(raw, model.task):
        model.outputs = "probabilities"
        warnings.append(
            "the model seems to output probabilities, not logits: medaudit uses their logarithm as logits "
            '(declare "outputs" in the model card to silence this)'
        )
    if model.class_names is None or len(model.class_names) != outputs:
        names = list(data.class_names[:outputs])
        names += [str(i) for i in range(len(names), outputs)]
        model.class_names = tuple(names)
    if model.is_onnx and model.twin is not None:
        warnings.extend(_verify_twin(model, x))
    model.warnings = warnings
    return warnings


def _verify_twin(model: AuditModel, x: torch.Tensor) -> list[str]:
    """Use the converted graph for gradients only if it matches onnxruntime."""
    with torch.inference_mode():
        pre = model.preprocess(x.to(model.device))
        theirs = model.network(pre).float().cpu()
        try:
            ours = model.twin(pre).float().cpu()
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            model.info.notes.append(f"black-box only: the converted graph fails to run ({_first_line(exc)})")
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
