"""The model's empirical local Lipschitz constant around test points (Yang et al., NeurIPS 2020).

Label sharpness K_F says how sharply the *data's* labels change between nearby images; this
module says how sharply the *model's* outputs change near each test image. A report shows the
two side by side: a model far smoother than its data cannot fit it, one far sharper is fragile.
They use different norms (K_F: label difference over L2 pixel distance; here: L1 output
difference over L-inf pixel distance), so compare them as a pair, never as a ratio.

Per sample, with f the model's logits (``output="logits"``, default) or class probabilities
(``output="probabilities"``)::

    L(x) = max over the ascent iterates x' of ||f(x') - f(x)||_1 / ||x' - x||_inf

The iterates come from signed-gradient ascent on that ratio (denominator held fixed within a
step) in the box ||x' - x||_inf <= eps, clamped to [0, 1], from a small seeded random start; the
reported number is the mean of L(x).

Against the reference (``lolip/utils.py::estimate_local_lip_v2`` in
``yangarbiter/robust-local-lipschitz``, called with ``top_norm=1, btm_norm=inf``):

- same: the objective on the raw network outputs (``model(x)``, i.e. logits),
  10 steps of 0.003, eps 0.01 (the function's default; the paper's experiment scripts pass their
  per-dataset attack radius instead), projection to the box then clamp to [0, 1], mean over samples.
- different: the step is the sign of the gradient of the numerator, not of the whole ratio (the
  two agree except on the pixels at the L-inf maximum; the reference's version cycles about 10 %
  below the maximum on a linear model, ours reaches it in 5 steps; on small CNNs ours is ~0.3 %
  higher); we keep each sample's best iterate (the start included) rather than the last, so the
  estimate never drops when ``steps`` grows (signed ascent on a ratio oscillates near its maximum);
  the start is N(0, (eps/10)^2) per pixel (the reference's 0.001 at eps 0.01), projected into the
  box; the denominator is exactly ||x' - x||_inf (the reference adds 1e-6 to every pixel first);
  each sample has its own seeded generator, so the result does not depend on the batch size.
- ``output="probabilities"``: softmax (sigmoid per label for multi-label tasks), a common variant
  that bounds the estimate (at most 1/2 of the logits one for binary softmax) but is not the paper's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from medaudit.attacks.base import project, steepest_step
from medaudit.data import AuditData
from medaudit.errors import ConfigError, ModelLoadError
from medaudit.intrinsic.config import LipschitzConfig
from medaudit.models import AuditModel
from medaudit.task import Task

# random start: N(0, (START_SCALE * eps)^2) per pixel; 0.001 at the reference's eps of 0.01
START_SCALE = 0.1
_SEED_TAG = 0x11F  # keeps these generators apart from other (seed, index) streams


@dataclass(frozen=True)
class LipschitzResult:
    """Per-sample estimates L(x); the mean is the number Yang et al. report."""

    per_sample: torch.Tensor
    config: LipschitzConfig

    @property
    def n(self) -> int:
        return len(self.per_sample)

    def to_dict(self) -> dict[str, Any]:
        values = self.per_sample.double()
        settings = asdict(self.config)
        return {
            "mean": float(values.mean()),
            "median": float(values.quantile(0.5)),
            "q90": float(values.quantile(0.9)),
            "max": float(values.max()),
            "n": self.n,
            **{key: settings[key] for key in ("eps", "steps", "step_size", "output", "seed")},
        }


def lipschitz_ratio(
    out: torch.Tensor, out_perturbed: torch.Tensor, x: torch.Tensor, x_perturbed: torch.Tensor
) -> torch.Tensor:
    """||out' - out||_1 / ||x' - x||_inf per sample (N,); 0 where x' == x (no evidence either way).

    Differentiable (the ascent maximises it): zero distances are guarded before the division,
    so their gradient is 0, not NaN.
    """
    top = (out_perturbed - out).flatten(1).abs().sum(dim=1)
    bottom = (x_perturbed - x).flatten(1).abs().amax(dim=1)
    ratio = top / bottom.clamp_min(torch.finfo(bottom.dtype).tiny)
    return torch.where(bottom > 0, ratio, torch.zeros_like(ratio))


def _outputs(model: AuditModel, x: torch.Tensor, output: str) -> torch.Tensor:
    logits = model(x)
    if output == "logits":
        return logits
    if model.task is Task.MULTI_LABEL:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


def _start_noise(indices: range, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise, one generator per sample index: independent of the batching."""
    noise = []
    for index in indices:
        state = np.random.SeedSequence([seed % 2**64, index, _SEED_TAG]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state))
        noise.append(torch.randn(shape, generator=generator))
    return torch.stack(noise)


def _ratio_and_grad(
    model: AuditModel, x: torch.Tensor, clean: torch.Tensor, x_adv: torch.Tensor, output: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ratio at x_adv, ascent direction); only the input requires a gradient.

    The direction is the gradient of the ratio with its denominator held fixed, i.e. of
    ||f(x') - f(x)||_1 (same sign, since the denominator is a positive number per sample). The
    denominator's own subgradient sits only on the pixels tied at the L-inf maximum; on the box
    boundary most pixels tie, and signed steps on it push them inward and out again, cycling
    about 10 % below the maximum even for a linear model.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        out = _outputs(model, x_adv, output)
        top = (out - clean).flatten(1).abs().sum(dim=1)
        # samples are independent in eval mode, so the sum's gradient is each sample's own
        (grad,) = torch.autograd.grad(top.sum(), x_adv, materialize_grads=True)
    return lipschitz_ratio(clean, out.detach(), x, x_adv.detach()), grad.detach()


def _batch_estimate(model: AuditModel, x: torch.Tensor, start: int, config: LipschitzConfig) -> torch.Tensor:
    with torch.no_grad():
        clean = _outputs(model, x, config.output)
    if not torch.isfinite(clean).all():
        raise ModelLoadError(
            f"the model returned NaN or infinite outputs for images {start}..{start + len(x) - 1}: "
            "check its weights and preprocessing (--mean/--std)"
        )
    noise = _start_noise(range(start, start + len(x)), tuple(x.shape[1:]), config.seed)
    x_adv = project(x, x + START_SCALE * config.eps * noise.to(x.device, x.dtype), config.eps, "linf")
    best = torch.zeros(len(x), device=x.device)
    for _ in range(config.steps):
        ratio, grad = _ratio_and_grad(model, x, clean, x_adv, config.output)
        best = torch.maximum(best, ratio)
        x_adv = project(x, x_adv + steepest_step(grad, config.step_size, "linf"), config.eps, "linf")
    with torch.no_grad():
        final = lipschitz_ratio(clean, _outputs(model, x_adv, config.output), x, x_adv)
    return torch.maximum(best, final)


def local_lipschitz(
    model: AuditModel,
    data: AuditData,
    config: LipschitzConfig,
    progress: Callable[[int], None] | None = None,
) -> LipschitzResult:
    """Empirical local Lipschitz constant of a bound model at every image of ``data``.

    Needs gradients (``model.forward``); ``progress`` receives the number of images per batch.
    """
    if not model.has_gradients:
        raise ConfigError(
            "the local Lipschitz estimate needs gradients; this model is black-box "
            "(ONNX without a verified torch twin)"
        )
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for start, x, _ in data.batches(config.batch_size):
            chunks.append(_batch_estimate(model, x.to(model.device), start, config).float().cpu())
            if progress:
                progress(len(x))
    finally:
        model.train(was_training)
    return LipschitzResult(per_sample=torch.cat(chunks), config=config)
