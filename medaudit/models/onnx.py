"""ONNX models: onnxruntime for inference, a converted torch twin for gradients.

The twin (onnx2pytorch, the optional ``onnx-gradients`` extra) is used only after its
logits match onnxruntime on the audit data (``verify_twin``); otherwise, or without
onnx2pytorch installed, the model is black-box only.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medaudit.errors import ModelLoadError, first_line
from medaudit.models.card import ModelCard, card_from_dict

TWIN_TOLERANCE = 1e-3  # max |logit difference| twin vs onnxruntime, relative to the logit scale


class OrtNetwork(nn.Module):
    """Runs an onnxruntime session on torch tensors (no gradients)."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = self.session.run(None, {self.input_name: array})
        if len(outputs) != 1:  # the wrapper refuses a tuple with the model's name
            return tuple(torch.from_numpy(np.asarray(o)) for o in outputs)
        out = np.asarray(outputs[0])
        if not np.issubdtype(out.dtype, np.floating):
            return torch.from_numpy(out)  # integer labels: refused by the wrapper, not cast to logits
        return torch.from_numpy(out.astype(np.float32, copy=False)).to(x.device)


def read_onnx(path: Path) -> Any:
    """The ONNX model in ``path``, with any external data loaded into it."""
    return read_onnx_and_data(path)[0]


def read_onnx_and_data(path: Path) -> tuple[Any, list[Path]]:
    """The ONNX model and the external data files its weights were read from (exported with
    ``external_data=True``: ``model.onnx`` + ``model.onnx.data``, which must sit side by side)."""
    import onnx
    from onnx.external_data_helper import (
        ExternalDataInfo,
        _get_all_tensors,  # what onnx.load itself walks: initializers and tensors in attributes
        load_external_data_for_model,
        uses_external_data,
    )

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError/ValueError/OSError variants
        raise ModelLoadError(
            f"cannot read {path} as ONNX ({type(exc).__name__}): the file is corrupt or not ONNX"
        ) from None
    folder = path.parent
    files: dict[Path, str] = {}  # where each external data file should be -> its name in the graph
    try:
        for tensor in _get_all_tensors(model):
            if uses_external_data(tensor):
                location = ExternalDataInfo(tensor).location
                files.setdefault(folder / location, location)
    except Exception as exc:  # a malformed external_data entry (negative offset, ...)
        raise ModelLoadError(
            f"{path} has a malformed external data entry ({first_line(exc)}): export it again"
        ) from None
    for file, location in files.items():
        if not file.is_file():
            raise ModelLoadError(
                f"{path} keeps its weights in the external data file {location}, which is missing: "
                f"the .data file must sit beside the .onnx file (expected at {file}); copy both together, "
                "or export with external_data=False to keep the weights inside the .onnx"
            )
    if files:
        try:
            load_external_data_for_model(model, str(folder))
        except Exception as exc:  # truncated data file, location outside the folder, ...
            names = ", ".join(files.values())
            raise ModelLoadError(
                f"cannot read the external data {names} of {path} ({first_line(exc)}): "
                "copy or export the .onnx file and its data file again"
            ) from None
    if len(model.graph.input) == 0 or len(model.graph.node) == 0:
        raise ModelLoadError(f"{path} has an empty ONNX graph: export the model again")
    return model, list(files)


def input_shape(model: Any) -> list[int | None]:
    """The first non-initializer input's dims (None where symbolic)."""
    initializers = {i.name for i in model.graph.initializer}
    graph_input = next((i for i in model.graph.input if i.name not in initializers), None)
    if graph_input is None:
        raise ModelLoadError("the ONNX graph has no input besides its weights: export the model again")
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in graph_input.type.tensor_type.shape.dim
    ]


def card_from_metadata(model: Any, where: str) -> ModelCard | None:
    """``metadata_props``: a whole card under 'medaudit_card', or loose keys."""
    props = {p.key: p.value for p in model.metadata_props}
    if "medaudit_card" in props:
        try:
            doc = json.loads(props["medaudit_card"])
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise ModelLoadError(
                f"{where}: metadata 'medaudit_card' is not valid JSON ({first_line(exc)}): export the card again"
            ) from None
        return card_from_dict(doc, f"{where} metadata")
    loose: dict[str, Any] = {}
    pre: dict[str, list[float] | int] = {}
    try:
        for key in ("mean", "std"):
            if key in props:
                pre[key] = [float(v) for v in props[key].replace("[", "").replace("]", "").split(",")]
        for key in ("input_size", "channels"):
            if key in props:
                pre[key] = int(props[key])
    except ValueError:
        raise ModelLoadError(f"{where}: metadata mean/std/input_size/channels must be numbers") from None
    if pre:
        loose["preprocessing"] = pre
    for key in ("task", "dataset", "outputs"):
        if key in props:
            loose[key] = props[key]
    if "class_names" in props:
        loose["class_names"] = [s.strip() for s in props["class_names"].split(",")]
    return card_from_dict(loose, f"{where} metadata") if loose else None


def make_session(path: Path, device: torch.device) -> Any:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        first = str(exc).splitlines()[0][:200]
        raise ModelLoadError(f"onnxruntime cannot open {path} ({first}): check the export") from None


def _drop_identities(model: Any) -> Any:
    """Remove Identity nodes (the legacy exporter wraps weights in them; converters choke)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
        else:
            kept.append(node)
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(kept)
    return model


def convert_to_torch(model: Any) -> tuple[nn.Module | None, str]:
    """A differentiable twin, or None and the reason it did not convert."""
    import copy

    try:
        from onnx2pytorch import ConvertModel
    except ImportError as exc:
        return None, (
            f"onnx2pytorch is not importable: {first_line(exc)}; "
            "pip install 'medaudit[onnx-gradients]' for gradients and white-box attacks"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            twin = ConvertModel(_drop_identities(copy.deepcopy(model)), experimental=True)
    except Exception as exc:  # converter failures are open-ended; any means "black-box"
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    return twin.eval(), ""
