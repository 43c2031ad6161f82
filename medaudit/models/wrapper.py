"""``AuditModel``: [0,1] NCHW images in, logits out, preprocessing inside.

Every attack budget is in [0,1] pixel units because resizing, channel handling
and mean/std normalisation happen here, differentiably, after the attack's
perturbation and before the user's network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from medaudit.errors import MedauditError, ModelRuntimeError, ShapeMismatch, what_raised
from medaudit.models.card import InputSpec
from medaudit.task import Task

if TYPE_CHECKING:
    from medaudit.data import AuditData
    from medaudit.models.features import Features


@dataclass
class ModelInfo:
    """Facts about the loaded file, for ``medaudit info`` and the JSON record."""

    path: str
    format: str
    sha256: str
    parameters: int | None
    card: str | None = None
    arch: str | None = None
    dataset: str | None = None
    dataset_size: int | None = None
    notes: list[str] = field(default_factory=list)
    twin_max_abs_diff: float | None = None
    warnings: list[str] = field(default_factory=list)
    """What loading found the user should fix (card keys it ignored); every audit repeats them."""


def _what_it_raised(exc: Exception) -> str:
    """'Type: first line'; a TorchScript error's own exception is on its last line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if isinstance(exc, torch.jit.Error) and len(lines) > 1:
        return lines[-1][:200]  # e.g. 'RuntimeError: ...' from the scripted code
    return what_raised(exc)


class Preprocess(nn.Module):
    """Channel broadcast, resize and normalisation from an ``InputSpec``."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, spec: InputSpec) -> None:
        super().__init__()
        self.spec = spec
        mean = torch.tensor(spec.mean or (0.0,), dtype=torch.float32)
        std = torch.tensor(spec.std or (1.0,), dtype=torch.float32)
        # channels unknown: as many as the mean/std give (3 values normalise 3 channels)
        channels = spec.channels or max(len(mean), len(std))
        self.register_buffer("mean", mean.expand(channels).reshape(1, channels, 1, 1).clone())
        self.register_buffer("std", std.expand(channels).reshape(1, channels, 1, 1).clone())
        self.normalise = spec.mean is not None or spec.std is not None

    def check(self, channels: int, size: tuple[int, int]) -> None:
        """Raise ShapeMismatch when data of this shape cannot feed the model."""
        want = self.spec.channels
        if want is not None and channels != want and not (channels == 1 and want == 3):
            raise ShapeMismatch(
                f"the data has {channels} channels but the model takes {want}: "
                "use data with matching channels or set --channels"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        want = self.spec.channels
        if want == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        size = self.spec.input_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            shrink = x.shape[-1] > size or x.shape[-2] > size
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        if self.normalise:
            x = (x - self.mean) / self.std
        return x


class AuditModel(nn.Module):
    """The one model type audits see.

    ``forward`` is differentiable when ``has_gradients``; ``predict`` is the
    fastest inference path (onnxruntime for ONNX files).
    """

    def __init__(
        self,
        network: nn.Module,
        spec: InputSpec,
        info: ModelInfo,
        *,
        task: Task | None = None,
        class_names: tuple[str, ...] | None = None,
        outputs: str | None = None,
        twin: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.preprocess = Preprocess(spec)
        self.network = network
        # ONNX: ``network`` runs onnxruntime; ``twin`` is the converted torch graph,
        # used for gradients only once ``bind_model`` has verified it.
        self.twin = twin
        self.twin_verified = False
        self.info = info
        self.task = task
        self.class_names = class_names
        self.outputs = outputs
        self.warnings: list[str] = []
        self.eval()

    @property
    def spec(self) -> InputSpec:
        return self.preprocess.spec

    @property
    def device(self) -> torch.device:
        return self.preprocess.mean.device

    @property
    def is_onnx(self) -> bool:
        return self.info.format == "onnx"

    @property
    def has_gradients(self) -> bool:
        """White-box attacks need this; ONNX models only with a verified twin."""
        return not self.is_onnx or self.twin_verified

    def adapt(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw network output -> logits the audits can use.

        One binary logit z becomes [-z/2, z/2] (softmax of that is sigmoid(z));
        probabilities become log-probabilities (softmax gives them back).
        """
        if raw.ndim == 1:
            raw = raw[:, None]
        if raw.ndim != 2:
            raise ShapeMismatch(f"the model returned shape {tuple(raw.shape)}: expected N x classes logits")
        multi_label = self.task is Task.MULTI_LABEL
        if self.outputs == "probabilities":
            p = raw.clamp(1e-12, 1.0)
            if multi_label or raw.shape[1] == 1:
                raw = torch.log(p) - torch.log1p(-p.clamp(max=1 - 1e-7))
            else:
                raw = torch.log(p)
        if raw.shape[1] == 1 and not multi_label:
            raw = torch.cat([-raw / 2, raw / 2], dim=1)
        return raw

    def run_network(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The user's network on preprocessed ``x``; whatever it raises or returns wrongly
        becomes a ModelRuntimeError naming the model (exit 3), not a medaudit crash."""
        try:
            out = network(x)
        except MedauditError:
            raise
        except Exception as exc:
            detail = _what_it_raised(exc)
            hint = " (lower --batch-size)" if isinstance(exc, torch.OutOfMemoryError) else ""
            raise ModelRuntimeError(
                f"the model {self.info.path} raised {detail} on a batch of {len(x)} images{hint}"
            ) from exc
        if not isinstance(out, torch.Tensor):
            raise ModelRuntimeError(
                f"the model {self.info.path} returned a {type(out).__name__}, not a tensor of logits: "
                "export a model whose forward returns one N x classes tensor"
            )
        if not out.is_floating_point():
            raise ModelRuntimeError(
                f"the model {self.info.path} returned {out.dtype} values, not float logits: "
                "export the network before any argmax or label output"
            )
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        network = self.network
        if self.twin_verified:
            assert self.twin is not None, "a verified twin is set by bind_model"
            network = self.twin
        return self.adapt(self.run_network(network, self.preprocess(x)))

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits without gradients, through the fastest backend (onnxruntime for ONNX)."""
        return self.adapt(self.run_network(self.network, self.preprocess(x)))

    def features(
        self,
        data: AuditData,
        layer: str | None = None,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
    ) -> Features:
        """Activations of ``layer`` (default: the input of the classifier head) for every image,
        reached the way this model's format allows (``medaudit.models.features``)."""
        from medaudit.models.features import extract_features

        return extract_features(self, data, layer, batch_size, progress)

    def describe(self) -> dict[str, Any]:
        """Everything ``medaudit info`` shows and the JSON records."""
        info = self.info
        return {
            "path": info.path,
            "format": info.format,
            "sha256": info.sha256,
            "parameters": info.parameters,
            "card": info.card,
            "arch": info.arch,
            "input": self.spec.to_dict(),
            "task": self.task.value if self.task else None,
            "class_names": list(self.class_names) if self.class_names else None,
            "outputs": self.outputs or "logits",
            "gradients": self.has_gradients,
            "backend": "onnxruntime" if self.is_onnx else "torch",
            "twin_max_abs_diff": info.twin_max_abs_diff,
            "notes": list(info.notes),
        }
