"""Penultimate-layer (or named-layer) features of any ``AuditModel`` (``AuditModel.features``),
for the d_repr audit: the backends' knowledge stays in ``medaudit.models``.

The representation intrinsic dimension (Konz & Mazurowski 2024) is measured on the
activations that feed a classifier's head. Each model format needs its own way to
reach them without changing the model:

* torch modules (and a verified ONNX twin as a last resort): temporary forward hooks;
* TorchScript: hooks are not supported, so a copy of the inlined graph is cut at its
  last linear layer and run as a new function on the same module;
* ``torch.export``: a copy of the fx graph whose output is the chosen node;
* ONNX: onnxruntime on a copy of the graph with the chosen tensor as an extra output
  (the real model, not the converted twin).

Preprocessing is ``model.preprocess`` exactly as in ``AuditModel.forward``, and static-
batch networks are padded and trimmed with ``FixedBatch``, as for the logits.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medaudit.data import AuditData
from medaudit.errors import ConfigError, MedauditError, first_line
from medaudit.models.formats import ExportedNetwork, FixedBatch
from medaudit.models.onnx import OrtNetwork
from medaudit.models.wrapper import AuditModel

__all__ = ["Features", "available_layers", "extract_features"]

LISTED = 15  # layer names shown in an error message
OTHER_FORMATS = "use the model's .pt2 (torch.export) or .onnx file to choose a layer"


@dataclass(frozen=True, eq=False)
class Features:
    """Activations, one flattened float32 row per image, and a description of where they came from.

    ``eq=False``: comparing dataclasses field by field is ambiguous for tensors.
    """

    values: torch.Tensor
    layer: str

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


@dataclass
class _Route:
    """How to get features from one network: ``run`` maps a preprocessed batch to activations."""

    run: Callable[[torch.Tensor], torch.Tensor]
    where: str  # e.g. "input of classifier"
    kind: str  # e.g. "Linear"

    def describe(self, shape: Sequence[int]) -> str:
        size = int(np.prod(shape)) if len(shape) else 1
        dims = f"{'x'.join(str(s) for s in shape)} = {size}" if len(shape) > 1 else str(size)
        return f"{self.where} ({self.kind}, {dims} features)"


class _Call(nn.Module):
    """A plain function as a module, so ``FixedBatch`` can pad and trim around it."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _unwrap(network: nn.Module) -> tuple[nn.Module, int | None]:
    """The network inside a ``FixedBatch`` and its static batch size (None when dynamic)."""
    if isinstance(network, FixedBatch):
        return network.network, network.batch
    return network, None


def _unknown_layer(layer: str, names: list[str], where: str) -> ConfigError:
    """One line: close matches first, then some of the available names."""
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.4)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    if not names:
        return ConfigError(f"unknown layer '{layer}'{hint}: {where} has no named layers")
    shown = names if len(names) <= LISTED else names[-LISTED:]
    which = "available" if len(names) <= LISTED else f"the last {LISTED} of {len(names)}"
    return ConfigError(f"unknown layer '{layer}' in {where}{hint}; {which}: {', '.join(shown)}")


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    """A hooked output: a tensor, or the first tensor of a tuple/list."""
    if isinstance(value, (tuple, list)):
        value = next((v for v in value if isinstance(v, torch.Tensor)), None)
    if not isinstance(value, torch.Tensor):
        raise ConfigError(f"layer '{name}' does not output a tensor: choose another layer")
    return value


# ----------------------------------------------------------------------------------------- torch modules


def _module_names(network: nn.Module) -> list[str]:
    return [name for name, _ in network.named_modules() if name]


def _hook_route(network: nn.Module, layer: str | None, where: str) -> _Route:
    """Default: input of the last ``nn.Linear`` (registration order); ``layer``: that module's output."""
    modules = dict(network.named_modules())
    if layer is None:
        linears = [(name, m) for name, m in network.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            names = _module_names(network)
            raise ConfigError(
                f"{where} has no nn.Linear head to take penultimate features from: pass a layer name "
                f"({', '.join(names[-LISTED:]) or 'none available'})"
            )
        name, module = linears[-1]
        description = f"input of {name or 'the network'}"
    elif layer in modules and layer:
        name, module = layer, modules[layer]
        description = f"output of {name}"
    else:
        raise _unknown_layer(layer, _module_names(network), where)
    captured: dict[str, Any] = {}

    def before(_module: nn.Module, args: tuple[Any, ...]) -> None:
        captured["value"] = args[0] if args else None

    def after(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        captured["value"] = output

    def run(x: torch.Tensor) -> torch.Tensor:
        captured.clear()
        # registered per batch and always removed: the model is left as it was
        if layer is None:
            handle = module.register_forward_pre_hook(before)
        else:
            handle = module.register_forward_hook(after)
        try:
            network(x)
        finally:
            handle.remove()
        if "value" not in captured:
            raise ConfigError(f"layer '{name}' did not run in the model's forward pass: choose another layer")
        return _as_tensor(captured["value"], name)

    return _Route(run, description, type(module).__name__)


# ------------------------------------------------------------------------------------------- TorchScript

_TS_HEADS = (("aten::linear", 0), ("aten::addmm", 1), ("aten::matmul", 0))


def _torchscript_route(network: torch.jit.ScriptModule, layer: str | None) -> _Route:
    """Cut a copy of the inlined graph at the last linear layer's input (hooks do not work here)."""
    if layer is not None:
        raise ConfigError(
            f"layer '{layer}' cannot be chosen in a TorchScript model (only the default penultimate "
            f"features are available): {OTHER_FORMATS}"
        )
    try:
        graph = network.inlined_graph  # a copy; the module's own graph is untouched
        nodes = list(graph.nodes())  # top-level block only: values inside if/loop blocks are not reachable
        head = None
        for kind, index in _TS_HEADS:
            found = [node for node in nodes if node.kind() == kind]
            if found:
                head = (found[-1], index, kind)
                break
        if head is None:
            raise ConfigError(f"the TorchScript graph has no linear layer to cut at: {OTHER_FORMATS}")
        node, index, kind = head
        value = node.inputsAt(index)
        while len(list(graph.outputs())):
            graph.eraseOutput(0)
        graph.registerOutput(value)
        torch._C._jit_pass_dce(graph)  # skip the head and anything only it used
        function = torch._C._create_function_from_graph("medaudit_features", graph)
    except (RuntimeError, AttributeError, TypeError, IndexError) as exc:
        raise ConfigError(
            f"cannot cut the TorchScript graph at its last linear layer ({first_line(exc)}): {OTHER_FORMATS}"
        ) from None

    def run(x: torch.Tensor) -> torch.Tensor:
        try:
            out = function(network._c, x)
        except RuntimeError as exc:
            raise ConfigError(
                f"the cut TorchScript graph fails to run ({first_line(exc)}): {OTHER_FORMATS}"
            ) from None
        return _as_tensor(out, kind)

    return _Route(run, f"input of the last {kind}", "TorchScript graph")


# -------------------------------------------------------------------------------------------- torch.export


def _export_heads() -> tuple[tuple[Any, int], ...]:
    aten = torch.ops.aten
    return ((aten.linear.default, 0), (aten.addmm.default, 1), (aten.mm.default, 0))


def _export_layer_names(module: torch.fx.GraphModule) -> list[str]:
    """fx nodes that compute a tensor (placeholders, parameters and the output excluded)."""
    names = []
    for node in module.graph.nodes:
        if node.op not in ("call_function", "call_module", "call_method"):
            continue
        val = node.meta.get("val")
        if val is None or isinstance(val, torch.Tensor):
            names.append(node.name)
    return names


def _export_route(network: ExportedNetwork, layer: str | None) -> _Route:
    """A copy of the fx graph whose output is the chosen node; the weights are shared, not copied."""
    module = network.module
    graph = copy.deepcopy(module.graph)
    if layer is None:
        node, kind = None, ""
        for target, index in _export_heads():
            found = [n for n in graph.nodes if n.op == "call_function" and n.target == target]
            if found:
                node, kind = found[-1].args[index], f"input of the last {target}"
                break
        if node is None or not isinstance(node, torch.fx.Node):
            raise ConfigError(
                "the torch.export graph has no linear layer (aten.linear/addmm/mm) to take penultimate "
                "features from: pass a node name as the layer"
            )
        where, what = kind, f"fx node {node.name}"
    else:
        names = _export_layer_names(module)
        if layer not in names:
            raise _unknown_layer(layer, names, "the torch.export graph")
        node = next(n for n in graph.nodes if n.name == layer)
        where, what = f"output of fx node {layer}", str(node.target)
    output = next(n for n in graph.nodes if n.op == "output")
    codegen = graph._codegen
    try:
        if isinstance(codegen, torch.fx.graph._PyTreeCodeGen):
            # one tensor leaf instead of whatever the model returned
            leaf = torch.utils._pytree.tree_structure(0)
            codegen.pytree_info = codegen.pytree_info._replace(out_spec=leaf)
            output.args = ((node,),)
        else:
            output.args = (node,)
        cut = torch.fx.GraphModule(module, graph)
        cut.graph.eliminate_dead_code()
        cut.recompile()
    except (RuntimeError, AttributeError, TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"cannot cut the torch.export graph at {node.name} ({first_line(exc)})") from None

    def run(x: torch.Tensor) -> torch.Tensor:
        return _as_tensor(cut(x), node.name)

    return _Route(run, where, what)


# --------------------------------------------------------------------------------------------------- ONNX


def _read_proto(model: AuditModel) -> Any:
    """The ONNX file the model was loaded from, refused if it changed since."""
    from medaudit.data.medmnist import sha256_file
    from medaudit.models.onnx import read_onnx

    path = Path(model.info.path)
    if not path.is_file():
        raise ConfigError(f"the ONNX file {path} is no longer there: load the model again")
    if sha256_file(path) != model.info.sha256:
        raise ConfigError(f"the ONNX file {path} changed since it was loaded: load the model again")
    return read_onnx(path)


def _onnx_tensor_names(proto: Any) -> list[str]:
    """Every tensor a top-level node computes, in graph order."""
    return [name for node in proto.graph.node for name in node.output if name]


def _onnx_constants(proto: Any) -> set[str]:
    """Initializers and what Constant nodes (or Identities of constants) produce."""
    constants = {init.name for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" or (node.op_type == "Identity" and node.input[0] in constants):
            constants.update(node.output)
    return constants


def _onnx_default(proto: Any) -> tuple[str, str, bool]:
    """(tensor, node description, transposed) for the input of the last Gemm/MatMul."""
    heads = [node for node in proto.graph.node if node.op_type in ("Gemm", "MatMul")]
    if not heads:
        raise ConfigError(
            "the ONNX graph has no Gemm or MatMul node to take penultimate features from: pass a tensor name as the layer"
        )
    node = heads[-1]
    constants = _onnx_constants(proto)
    first, second = node.input[0], node.input[1]
    transposed = False
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        transposed = bool(trans_a)
        tensor = first
    else:  # MatMul: the activation is the operand that is not a weight
        tensor = second if first in constants and second not in constants else first
    label = f"{node.op_type} node '{node.name}'" if node.name else f"the last {node.op_type} node"
    return tensor, label, transposed


def _ort_providers(device: torch.device) -> list[str]:
    """As ``medaudit.models.onnx.make_session`` chooses them."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return providers


def _onnx_route(model: AuditModel, network: OrtNetwork, layer: str | None) -> _Route:
    """onnxruntime on a copy of the graph with the chosen tensor as an extra output."""
    import onnx
    import onnxruntime as ort

    proto = _read_proto(model)
    if layer is None:
        tensor, label, transposed = _onnx_default(proto)
        where, what = f"input of {label}", f"ONNX tensor '{tensor}'"
    else:
        names = _onnx_tensor_names(proto)
        if layer not in names:
            raise _unknown_layer(layer, names, "the ONNX graph")
        tensor, transposed = layer, False
        producer = next(n for n in proto.graph.node if layer in n.output)
        where, what = f"ONNX tensor '{layer}'", f"output of {producer.op_type}"
    graph = proto.graph  # read_onnx gave a fresh copy: editing it changes nothing loaded
    if tensor not in {o.name for o in graph.output}:
        known = {v.name: v for v in graph.value_info}
        if tensor not in known:
            try:
                known = {v.name: v for v in onnx.shape_inference.infer_shapes(proto).graph.value_info}
            except Exception:  # inference is best effort: without it the type is assumed float
                known = {}
        elem_type = (
            known[tensor].type.tensor_type.elem_type if tensor in known else onnx.TensorProto.FLOAT
        ) or onnx.TensorProto.FLOAT
        graph.output.append(onnx.helper.make_tensor_value_info(tensor, elem_type, None))
    try:
        session = ort.InferenceSession(proto.SerializeToString(), providers=_ort_providers(model.device))
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ConfigError(f"onnxruntime cannot run the graph cut at '{tensor}' ({first_line(exc)})") from None
    input_name = network.input_name

    def run(x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = session.run([tensor], {input_name: array})[0]
        values = torch.from_numpy(np.asarray(out, dtype=np.float32))
        return values.T if transposed else values

    return _Route(run, where, what)


# ------------------------------------------------------------------------------------------------ routing


def _route(model: AuditModel, layer: str | None) -> tuple[_Route, int | None]:
    """The route for this model's backend, and the static batch size to pad to."""
    network, fixed = _unwrap(model.network)
    if isinstance(network, OrtNetwork):
        try:
            return _onnx_route(model, network, layer), fixed
        except MedauditError:
            # the real model is preferred; a verified twin is the fallback for the default layer only
            if layer is not None or not (model.twin_verified and model.twin is not None):
                raise
        twin, fixed = _unwrap(model.twin)
        return _hook_route(twin, None, "the converted ONNX graph"), fixed
    if isinstance(network, torch.jit.RecursiveScriptModule):
        return _torchscript_route(network, layer), fixed
    if isinstance(network, ExportedNetwork):
        return _export_route(network, layer), fixed
    return _hook_route(network, layer, "the model"), fixed


def available_layers(model: AuditModel) -> list[str]:
    """Names ``extract_features(layer=...)`` accepts (empty for TorchScript, which has only the default)."""
    network, _ = _unwrap(model.network)
    if isinstance(network, OrtNetwork):
        try:
            return _onnx_tensor_names(_read_proto(model))
        except MedauditError:
            return []
    if isinstance(network, torch.jit.RecursiveScriptModule):
        return []
    if isinstance(network, ExportedNetwork):
        return _export_layer_names(network.module)
    return _module_names(network)


def extract_features(
    model: AuditModel,
    data: AuditData,
    layer: str | None = None,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> Features:
    """Flattened activations of ``layer`` (default: the input of the classifier head) for every image.

    ``progress`` is called with the number of images done after each batch.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    with torch.inference_mode():
        route, fixed = _route(model, layer)
        run: Callable[[torch.Tensor], torch.Tensor] = (
            FixedBatch(_Call(route.run), fixed) if fixed else route.run
        )
        chunks: list[torch.Tensor] = []
        shape: tuple[int, ...] = ()
        for _, x, _ in data.batches(batch_size):
            out = run(model.preprocess(x.to(model.device)))
            if out.ndim == 0 or out.shape[0] != len(x):
                raise ConfigError(
                    f"{route.where} has shape {tuple(out.shape)}, not one row per image: choose another layer"
                )
            shape = tuple(out.shape[1:])
            chunks.append(out.detach().reshape(len(x), -1).to("cpu", torch.float32))
            if progress:
                progress(len(x))
    values = torch.cat(chunks)
    return Features(values=values, layer=route.describe(shape))
