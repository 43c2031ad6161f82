"""Read each model format into a torch module plus what the file says about its input.

No code from a file runs before we know it is safe: pickled whole modules are
refused unless ``--trust-checkpoint`` is given (``weights_only=True`` loading
rejects them without executing anything), and a model card may name only a
built-in architecture: a ``package.module:factory`` imports and runs Python code,
so it must come from the user (``--arch`` or the audit file), never from a file
that travels with the model.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import pickle
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medaudit.errors import ConfigError, ModelLoadError, first_line
from medaudit.models.archs import architectures
from medaudit.models.card import InputSpec
from medaudit.registry import import_object

# torch.save's legacy (non-zip) files start with this pickled magic number.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8"


@dataclass(frozen=True)
class ArchChoice:
    """An architecture name and who chose it: error messages name the source, and only the
    user (not a card) may choose a ``package.module:factory``, which runs Python code."""

    name: str
    label: str = "--arch"
    """How the user gave it: ``--arch`` (command line), or e.g. "the audit file's arch"."""
    card: str | None = None
    """The card's path when the card chose it."""
    search: Path | None = None
    """Where the user's ``module:factory`` is looked for first (then sys.path): the current folder
    for ``--arch``, the audit file's folder for its arch. Never set for a card's choice."""

    @classmethod
    def from_card(cls, name: str, card: str | None) -> ArchChoice:
        return cls(name=name, label="the card's arch", card=card or "the model card")

    @property
    def is_code(self) -> bool:
        """A user factory (imported and called), not a built-in name."""
        return ":" in self.name

    def describe(self) -> str:
        """'--arch X' when typed as that flag, else e.g. "the card's arch 'X'"."""
        return f"--arch {self.name}" if self.label == "--arch" else f"{self.label} '{self.name}'"


@dataclass
class Loaded:
    """A network and what its file told us."""

    network: nn.Module
    format: str
    spec: InputSpec = field(default_factory=InputSpec)
    arch: str | None = None
    fixed_batch: int | None = None
    sample_shape: tuple[int, ...] | None = None
    """One image's shape (C, H, W) when the file fixes it: the shape of the vectorising probe."""


def detect_format(path: Path) -> str:
    """'torchscript', 'export', 'torch-save' or 'onnx', from the file's content."""
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist: check the path")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder: give the model file itself")
    if path.suffix.lower() == ".onnx":
        return "onnx"
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError:
        is_zip = False  # unreadable: the open() below says why
    if is_zip:
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except Exception as exc:  # zipfile raises BadZipFile, UnicodeDecodeError, NotImplementedError...
            raise ModelLoadError(
                f"{path} is a damaged archive ({first_line(exc)}): save the model again"
            ) from None
        if any("/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("archive_format") or "/models/" in n for n in names):
            return "export"
        if any(n.endswith("data.pkl") for n in names):
            return "torch-save"
        raise ModelLoadError(f"{path} is a zip archive but not a PyTorch model: check the file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(LEGACY_TORCH_MAGIC))
    except OSError as exc:
        raise ModelLoadError(
            f"cannot read {path} ({first_line(exc)}): check the file's permissions"
        ) from None
    if head == LEGACY_TORCH_MAGIC:
        return "torch-save"
    if path.suffix.lower() in (".pt", ".pth", ".pt2", ".ckpt", ".bin"):
        raise ModelLoadError(
            f"{path} is not a readable PyTorch archive (corrupt or truncated?): save or copy it again"
        )
    raise ModelLoadError(
        f"cannot tell the format of {path}: use TorchScript/state_dict (.pt), torch.export (.pt2) or ONNX (.onnx)"
    )


def load_torchscript(path: Path) -> Loaded:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            network = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # a damaged archive fails in many ways (RuntimeError, UnicodeDecodeError...)
        raise ModelLoadError(
            f"cannot load TorchScript file {path} ({first_line(exc)}): save it again"
        ) from None
    return Loaded(network=network, format="torchscript")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


@contextlib.contextmanager
def _captured_logger(name: str) -> Iterator[_Collect]:
    """Keep a logger's records off stderr and collect the exceptions they carry."""
    logger = logging.getLogger(name)
    saved = logger.handlers[:], logger.propagate
    collect = _Collect()
    logger.handlers, logger.propagate = [collect], False
    try:
        yield collect
    finally:
        logger.handlers, logger.propagate = saved


def load_export(path: Path) -> Loaded:
    """A ``torch.export`` archive; its example input gives channels and size."""
    # torch.export logs a whole traceback, then raises "check the warnings above": keep the
    # logged error for the message and the traceback off stderr
    with _captured_logger("torch.export") as logged:
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # a damaged archive fails in many ways (RuntimeError, KeyError...)
            cause = logged.errors[0] if logged.errors else exc
            raise ModelLoadError(
                f"cannot load torch.export archive {path} ({first_line(cause)}): export it again"
            ) from None
    user_inputs = set(program.graph_signature.user_inputs)
    shapes = [
        node.meta["val"].shape
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in user_inputs and "val" in node.meta
    ]
    loaded = Loaded(network=ExportedNetwork(program.module()), format="export")
    if len(shapes) == 1 and len(shapes[0]) == 4:
        batch, channels, height, width = shapes[0]
        if isinstance(channels, int) and channels in (1, 3):
            loaded.spec = InputSpec(channels=channels)
        if isinstance(height, int) and height == width:
            loaded.spec = InputSpec(channels=loaded.spec.channels, input_size=height)
        if isinstance(batch, int):
            loaded.fixed_batch = batch
        if all(isinstance(d, int) for d in (channels, height, width)):
            loaded.sample_shape = (channels, height, width)
    return loaded


class ExportedNetwork(nn.Module):
    """Holds a ``torch.export`` module, whose ``train()``/``eval()`` raise NotImplementedError.

    The graph's train/eval behaviour was fixed at export time, so switching mode
    is a no-op here instead of an error (``AuditModel`` calls ``eval()``).
    """

    def __init__(self, module: torch.fx.GraphModule) -> None:
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> ExportedNetwork:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def _unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """Plain state_dicts and the common {'state_dict': ...} / {'model': ...} wrappers."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return {k.removeprefix("module."): v for k, v in obj.items()}
    return None


def _shape_hints(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """in_channels from the first conv weight, num_classes from the last 2-D weight."""
    hints = {}
    convs = [v for v in state.values() if v.ndim == 4]
    linears = [v for k, v in state.items() if v.ndim == 2 and k.endswith("weight")]
    if convs:
        hints["in_channels"] = int(convs[0].shape[1])
    if linears:
        hints["num_classes"] = int(linears[-1].shape[0])
    return hints


def arch_factory(choice: ArchChoice) -> Callable[..., object]:
    """The factory ``choice`` names. A card's ``module:factory`` is refused before any import."""
    builtins = ", ".join(architectures.names())
    if choice.is_code:
        if choice.card is not None:
            raise ModelLoadError(
                f"the card {choice.card} names arch '{choice.name}', a Python factory; a card may only name "
                f"built-in architectures ({builtins}) because importing a module from beside the model runs "
                f"its code: pass --arch {choice.name} (or arch in the audit file's [model] section) "
                "if you trust that code"
            )
        factory = import_object(choice.name, search=choice.search)
    else:
        if choice.name not in architectures:
            close = difflib.get_close_matches(choice.name, architectures.names(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            where = f" in {choice.card}" if choice.card else ""
            raise ConfigError(
                f"{choice.describe()}{where} is not a built-in architecture.{hint} Choose from: {builtins}; "
                "or pass --arch package.module:factory"
            )
        factory = architectures.get(choice.name)
    if not callable(factory):
        raise ConfigError(f"{choice.describe()} is not callable: name a function or class")
    return factory


def _key_differences(network: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Missing + unexpected + shape-mismatched keys of ``state`` against ``network``'s."""
    own = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state.items()}
    shared = own.keys() & theirs.keys()
    return len(own.keys() - shared) + len(theirs.keys() - shared) + sum(own[k] != theirs[k] for k in shared)


def closest_builtin(state: dict[str, torch.Tensor], hints: dict[str, int]) -> tuple[str, int] | None:
    """The built-in architecture whose state_dict differs least from ``state`` (built on the meta
    device with the checkpoint's in_channels/num_classes, so no weights are allocated), and by
    how many keys; None when nothing could be built."""
    best: tuple[str, int] | None = None
    for name in architectures.names():
        try:
            with torch.device("meta"):
                network = architectures.get(name)(**hints)
            differences = _key_differences(network, state)
        except Exception:  # a built-in that cannot take these shapes is simply not close
            continue
        if best is None or differences < best[1]:
            best = (name, differences)
    return best


def _closest_hint(choice: ArchChoice, state: dict[str, torch.Tensor], hints: dict[str, int]) -> str:
    """'; closest built-in: NAME (fits exactly)' for the error, or '' when no other built-in is
    near (more than a quarter of the checkpoint's keys differ)."""
    closest = closest_builtin(state, hints)
    if closest is None or closest[0] == choice.name or closest[1] > len(state) // 4:
        return ""
    name, differences = closest
    fit = "fits exactly" if differences == 0 else f"{differences} key{'s' if differences != 1 else ''} differ"
    return f"; closest built-in: {name} ({fit})"


def build_arch(choice: ArchChoice | str, state: dict[str, torch.Tensor]) -> nn.Module:
    """Call a built-in or user factory with the kwargs it accepts, then load weights."""
    if isinstance(choice, str):
        choice = ArchChoice(choice)
    factory = arch_factory(choice)
    what = choice.describe()
    hints = _shape_hints(state)
    try:
        accepted = inspect.signature(factory).parameters
        kwargs = {k: v for k, v in hints.items() if k in accepted}
    except (TypeError, ValueError):
        kwargs = {}
    try:
        network = factory(**kwargs)
    except Exception as exc:  # the factory is the user's code, or a built-in fed the checkpoint's shapes
        called = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        raise ConfigError(
            f"{what} raised {type(exc).__name__} when called{f' with {called}' if called else ''}: "
            f"{first_line(exc)}"
        ) from None
    if not isinstance(network, nn.Module):
        raise ConfigError(f"{what} returned {type(network).__name__}, not a torch nn.Module")
    try:
        result = network.load_state_dict(state, strict=False)
    except Exception as exc:  # shape mismatches are raised, not returned; user modules may raise anything
        if not isinstance(exc, RuntimeError) and not choice.is_code:
            raise
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[0] if first else "")
        raise ModelLoadError(
            f"the checkpoint does not fit {what} ({detail[:160]}): choose the architecture it was trained "
            f"with{_closest_hint(choice, state, hints)}"
        ) from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing {', '.join(result.missing_keys[:3])}")
    if result.unexpected_keys:
        problems.append(f"unexpected {', '.join(result.unexpected_keys[:3])}")
    if problems:
        raise ModelLoadError(
            f"the checkpoint does not fit {what} ({'; '.join(problems)}): choose the architecture it was "
            f"trained with{_closest_hint(choice, state, hints)}"
        )
    return network


def load_torch_save(path: Path, arch: ArchChoice | str | None, trust_checkpoint: bool) -> Loaded:
    """A ``torch.save`` file: a state_dict (needs an architecture) or a pickled module."""
    if isinstance(arch, str):
        arch = ArchChoice(arch)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust_checkpoint:
            raise ModelLoadError(
                f"{path} holds a pickled Python object and unpickling runs code from the file, so it is refused: "
                "re-save it as TorchScript, torch.export or a state_dict (with --arch), "
                "or pass --trust-checkpoint if you trust where it came from"
            ) from None
        return _load_trusted(path)
    except Exception as exc:  # weights_only loading runs no code; a damaged file fails in many ways
        raise ModelLoadError(
            f"cannot read {path} ({first_line(exc)}): the file is corrupt or truncated"
        ) from None
    state = _unwrap_state_dict(obj)
    if state is None:
        raise ModelLoadError(
            f"{path} holds a {type(obj).__name__}, not a model or state_dict: save model.state_dict()"
        )
    if arch is None:
        raise ConfigError(
            f"{path} is a state_dict: pass --arch NAME ({', '.join(architectures.names())}) "
            "or --arch package.module:factory"
        )
    network = build_arch(arch, state)
    channels = _shape_hints(state).get("in_channels")
    channels = channels if channels in (1, 3) else None
    return Loaded(network=network, format="state_dict", spec=InputSpec(channels=channels), arch=arch.name)


def _load_trusted(path: Path) -> Loaded:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except (AttributeError, ModuleNotFoundError) as exc:
        raise ModelLoadError(
            f"cannot unpickle {path} ({first_line(exc)}): the code that defined the model must be importable"
        ) from None
    except Exception as exc:  # the user trusted the file; what its unpickling runs may raise anything
        raise ModelLoadError(
            f"unpickling {path} raised {type(exc).__name__} ({first_line(exc)}): the file is damaged, "
            "or the code it calls failed"
        ) from None
    if isinstance(obj, nn.Module):
        return Loaded(network=obj, format="pickled-module")
    state = _unwrap_state_dict(obj)
    if state is not None:
        raise ConfigError(f"{path} is a state_dict: pass --arch instead of --trust-checkpoint")
    raise ModelLoadError(f"{path} unpickled to a {type(obj).__name__}, not a torch nn.Module")


EXPORT_FIX = (
    "torch.export.export(model, (torch.zeros(2, C, H, W),), dynamic_shapes=({0: torch.export.Dim('batch')},))"
)
"""The export call that gives a program any batch size (an example batch of 2: with 1, torch
specialises the batch dimension to the constant 1)."""
VMAP_TOLERANCE = 1e-4
"""Largest difference (relative to the logits' scale) allowed between the vectorised and the
one-call-per-group outputs or gradients on the probe before vectorising is refused."""


class FixedBatch(nn.Module):
    """Feed a network exported for one batch size with any batch: pad to a multiple of it, then trim.

    ``vectorised``: one call under ``torch.func.vmap`` over groups of ``batch`` images (the network
    sees its own batch size, so its shape guards hold, while the kernels run on the whole batch);
    otherwise one call per group, which is many times slower for a batch-1 program.
    """

    def __init__(self, network: nn.Module, batch: int, vectorised: bool = False) -> None:
        super().__init__()
        self.network = network
        self.batch = batch
        self.vectorised = vectorised

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        groups = -(-n // self.batch)
        if groups * self.batch > n:
            x = torch.cat([x, x[-1:].expand(groups * self.batch - n, *x.shape[1:])])
        if self.vectorised:
            out = torch.func.vmap(self.network)(x.reshape(groups, self.batch, *x.shape[1:]))
            return out.reshape(groups * self.batch, *out.shape[2:])[:n]
        return torch.cat([self.network(chunk) for chunk in x.split(self.batch)])[:n]


def vectorise_failure(network: nn.Module, batch: int, shape: tuple[int, ...]) -> str | None:
    """Why ``FixedBatch(network, batch, vectorised=True)`` cannot stand in for the one-call-per-group
    loop (None when it can): both run on seeded probe images of ``shape`` (C, H, W) and must agree
    in outputs and input gradients, the attacks' two needs."""
    probe = torch.rand(2 * batch + 1, *shape, generator=torch.Generator().manual_seed(0))
    results = []
    for vectorised in (False, True):
        x = probe.clone().requires_grad_(True)
        try:
            out = FixedBatch(network, batch, vectorised)(x)
            (grad,) = torch.autograd.grad(out.float().sum(), x)
        except Exception as exc:  # vmap lacks rules for some ops; the user's graph may raise anything
            return f"{'vmap' if vectorised else 'the program'} raised {type(exc).__name__}: {first_line(exc)}"
        results.append((out.detach().float(), grad))
    (out, grad), (fast_out, fast_grad) = results
    for name, slow, fast in (("outputs", out, fast_out), ("gradients", grad, fast_grad)):
        scale = float(slow.abs().max()) or 1.0
        if fast.shape != slow.shape or not float((fast - slow).abs().max()) <= VMAP_TOLERANCE * scale:
            return f"vmap {name} differ from one call per group"
    return None
