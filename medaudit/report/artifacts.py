"""Files an attack can leave behind for a human: adversarial arrays and a picture grid."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from medaudit.attacks.sweep import AttackResult
from medaudit.data import AuditData
from medaudit.report.atomic import write_atomic

GRID_ROWS = 8
TILE = 112


def save_adversarial(path: Path, result: AttackResult, data: AuditData) -> None:
    """``eps`` (E,), ``labels``, ``clean_predictions`` (N,), ``adv_images`` float32 (E, N, C, H, W),
    ``adv_predictions`` and ``broken_by`` (E, N; -1 robust, -2 clean-wrong, else attack index),
    ``attacks`` (names)."""
    assert result.adversarial is not None, "run_attacks(keep_adversarial=True) first"
    eps = [o.eps for o in result.outcomes]
    # through a buffer: given a bare path, numpy would append ".npz" to the name
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        eps=np.array(eps, dtype=np.float64),
        attacks=np.array(result.config.attacks),
        labels=data.labels.numpy(),
        clean_predictions=_predict(result.clean_logits, result),
        adv_images=np.stack([result.adversarial[e].numpy().astype(np.float32) for e in eps]),
        adv_predictions=np.stack([_predict(o.adv_logits, result) for o in result.outcomes]),
        broken_by=np.stack([o.broken_by for o in result.outcomes]),
    )
    write_atomic(path, buffer.getvalue())


def _predict(logits: torch.Tensor, result: AttackResult) -> np.ndarray:
    if result.task.single_label:
        return logits.argmax(dim=1).numpy()
    return (logits > 0).long().numpy()


def save_grid(path: Path, result: AttackResult, data: AuditData) -> int:
    """Clean | adversarial | amplified difference for the most fragile broken samples.

    Returns the number of rows drawn (0 when nothing was broken).
    """
    from PIL import Image, ImageDraw

    assert result.adversarial is not None, "run_attacks(keep_adversarial=True) first"
    picks: list[tuple[int, float]] = []
    for outcome in result.outcomes:  # smallest eps first: the most fragile samples
        for sample in np.flatnonzero(outcome.broken_by >= 0):
            if all(sample != p for p, _ in picks):
                picks.append((int(sample), outcome.eps))
    picks = picks[:GRID_ROWS]
    if not picks:
        return 0
    names = result.class_names
    label_height = 14
    canvas = Image.new("RGB", (3 * TILE, len(picks) * (TILE + label_height)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (index, eps) in enumerate(picks):
        outcome = next(o for o in result.outcomes if o.eps == eps)
        clean = data.float_at(np.array([index]))[0]
        adv = result.adversarial[eps][index]
        diff = adv - clean
        scale = float(diff.abs().max()) or 1.0
        tiles = [clean, adv, (diff / (2 * scale) + 0.5).clamp(0, 1)]
        top = row * (TILE + label_height)
        for column, tile in enumerate(tiles):
            array = (tile.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).convert("RGB")
            canvas.paste(
                image.resize((TILE, TILE), Image.Resampling.NEAREST), (column * TILE, top + label_height)
            )
        label = int(data.labels[index]) if result.task.single_label else -1
        predicted = int(outcome.adv_logits[index].argmax()) if result.task.single_label else -1
        text = f"#{index} eps {eps * 255:.2g}/255: {names[label] if label >= 0 else '?'} -> "
        text += f"{names[predicted] if predicted >= 0 else '?'}   diff x{1 / (2 * scale):.0f}"
        draw.text((2, top + 1), text, fill="black")
    canvas.save(path, format="PNG")  # whatever the file name's extension (PIL guesses from it)
    return len(picks)
