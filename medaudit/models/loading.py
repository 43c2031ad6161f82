"""Loading any supported model file (TorchScript, torch.export, state_dict, pickled module, ONNX)
into an ``AuditModel``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from medaudit.data.medmnist import sha256_file
from medaudit.errors import ConfigError
from medaudit.models import formats, onnx
from medaudit.models.card import ASSUMED_UNIT_INPUT, InputSpec, ModelCard, card_hints, read_card
from medaudit.models.wrapper import AuditModel, ModelInfo
from medaudit.task import Task


@dataclass(frozen=True)
class LoadOptions:
    """Everything the user can say about a model on the command line (flags beat the card)."""

    arch: str | None = None
    """The user's architecture (never the card's: that one is resolved in ``load_model``)."""
    arch_source: str = "--arch"
    """How the user gave ``arch``, for messages: "--arch", or e.g. "the audit file's arch"."""
    arch_search: Path | None = None
    """The folder a ``package.module:factory`` in ``arch`` is imported from first (put on sys.path
    for that import only): the current folder for ``--arch``, the audit file's folder for its arch.
    None: sys.path alone. A card's arch never gets one (a card may only name built-ins)."""
    trust_checkpoint: bool = False
    spec: InputSpec = field(default_factory=InputSpec)
    task: Task | None = None
    outputs: str | None = None
    device: str = "auto"


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available: use --device cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device '{name}': use auto, cpu or cuda")
    return torch.device(name)


def choose_arch(options: LoadOptions, card: ModelCard | None) -> formats.ArchChoice | None:
    """The user's architecture, else the card's, each labelled with where it came from.

    Nothing is imported here; a card's ``module:factory`` is refused by ``formats.arch_factory``
    when a state_dict actually needs it (a TorchScript file's card may name one harmlessly).
    """
    if options.arch is not None:
        if not options.arch.strip():
            raise ConfigError(
                f"{options.arch_source} is empty: give a built-in name or package.module:factory"
            )
        return formats.ArchChoice(options.arch.strip(), label=options.arch_source, search=options.arch_search)
    if card is not None and card.arch:
        return formats.ArchChoice.from_card(card.arch, card.path)
    return None


def _count_parameters(network: torch.nn.Module) -> int | None:
    try:
        return sum(p.numel() for p in network.parameters())
    except RuntimeError:
        return None


def _fixed_batch(loaded: formats.Loaded) -> tuple[formats.FixedBatch, str]:
    """The network wrapped to take any batch size, vectorised when that gives the same outputs and
    gradients on a probe, and the note saying which (with the export call that avoids it)."""
    batch = loaded.fixed_batch
    assert batch is not None, "called for fixed-batch programs only"
    reason = "the input shape is not fixed in the file"
    if loaded.sample_shape is not None:
        failure = formats.vectorise_failure(loaded.network, batch, loaded.sample_shape)
        if failure is None:
            note = (
                f"exported for batch size {batch}: medaudit runs whole batches through it with "
                f"torch.func.vmap (its outputs and gradients match one call per batch of {batch} on "
                f"probe images); to run it natively, export with {formats.EXPORT_FIX}"
            )
            return formats.FixedBatch(loaded.network, batch, vectorised=True), note
        reason = failure
    note = (
        f"exported for batch size {batch}: medaudit calls it once per {batch} images, which is slow "
        f"(vmap cannot batch it: {reason}); export with {formats.EXPORT_FIX}"
    )
    return formats.FixedBatch(loaded.network, batch), note


def load_model(path: Path, options: LoadOptions = LoadOptions()) -> AuditModel:
    """Read any supported model file into an ``AuditModel`` (not yet checked against data)."""
    path = Path(path)
    device = resolve_device(options.device)
    fmt = formats.detect_format(path)
    card = read_card(path)
    notes: list[str] = []
    twin = None
    parameters: int | None
    if fmt == "onnx":
        graph, external = onnx.read_onnx_and_data(path)
        for file in external:  # the sha256 below is the .onnx file's alone
            notes.append(f"weights in {file.name} beside the .onnx (sha256 {sha256_file(file)})")
        card = card or onnx.card_from_metadata(graph, str(path))
        dims = onnx.input_shape(graph)
        spec = InputSpec()
        if len(dims) == 4:
            channels = dims[1] if dims[1] in (1, 3) else None
            size = dims[2] if dims[2] is not None and dims[2] == dims[3] else None
            spec = InputSpec(channels=channels, input_size=size)
        network: nn.Module = onnx.OrtNetwork(onnx.make_session(path, device))
        twin, reason = onnx.convert_to_torch(graph)
        if twin is None:
            notes.append(f"black-box only: the ONNX graph did not convert to torch ({reason})")
        if len(dims) == 4 and dims[0] is not None:
            network = formats.FixedBatch(network, dims[0])
            if twin is not None:  # the converted graph has the same batch size baked into its reshapes
                twin = formats.FixedBatch(twin, dims[0])
        loaded = formats.Loaded(network=network, format="onnx", spec=spec)
        parameters = sum(int(torch.tensor(i.dims).prod()) for i in graph.graph.initializer)
    else:
        arch = choose_arch(options, card)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            if fmt == "torchscript":
                loaded = formats.load_torchscript(path)
            elif fmt == "export":
                loaded = formats.load_export(path)
            else:
                loaded = formats.load_torch_save(path, arch, options.trust_checkpoint)
        parameters = _count_parameters(loaded.network)
        if loaded.fixed_batch:
            loaded.network, note = _fixed_batch(loaded)
            notes.append(note)
    card = card or ModelCard()
    spec = loaded.spec.overridden_by(card.spec).overridden_by(options.spec)
    if spec.mean is None and spec.std is None:
        notes.append(ASSUMED_UNIT_INPUT)
    info = ModelInfo(
        path=str(path),
        format=loaded.format,
        sha256=sha256_file(path),
        parameters=parameters,
        card=card.path,
        arch=loaded.arch,
        dataset=card.dataset,
        dataset_size=card.dataset_size,
        notes=notes,
        warnings=[
            f"model card {card.path}: {hint}, so it was ignored" for hint in card_hints(card.raw or {})
        ],
    )
    model = AuditModel(
        loaded.network,
        spec,
        info,
        task=options.task or card.task,
        class_names=card.class_names,
        outputs=options.outputs or card.outputs,
        twin=twin,
    )
    return model.to(device)
