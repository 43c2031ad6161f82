"""PNG figures for `medaudit shift`: valid, non-blank images, correct scales, and atomic writes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medaudit.errors import OutputError
from medaudit.report import figures

CORRUPTIONS = [
    "pixelate",
    "jpeg_compression",
    "gaussian_noise",
    "speckle_noise",
    "impulse_noise",
    "shot_noise",
    "defocus_blur",
    "motion_blur",
    "zoom_blur",
    "gaussian_blur",
    "brightness_up",
    "brightness_down",
    "contrast_up",
    "contrast_down",
    "gamma_corr_down",
]
SEVERITY_LABELS = [f"severity {s}" for s in range(1, 6)]


def _rows(clean: np.ndarray, names: list[str], seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        out[name] = [
            np.clip(clean.astype(int) + rng.integers(-30 * s, 30 * s + 1, clean.shape), 0, 255).astype(
                np.uint8
            )
            for s in range(1, 6)
        ]
    return out


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes the whole stream: fails on a truncated file
        return np.asarray(image.convert("RGB"))


def _heat_values(seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).normal(0.05, 0.1, (len(CORRUPTIONS), 5))
    values[0, 0] = -0.2
    values[2, 3] = np.nan
    return values


@pytest.fixture
def grey() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (28, 28, 1), dtype=np.uint8)


@pytest.fixture
def rgb() -> np.ndarray:
    image = np.random.default_rng(2).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    image[..., 0] = 255  # strongly red, so colour must survive into the PNG
    return image


def test_grey_grid_is_a_tall_readable_neutral_png(tmp_path: Path, grey: np.ndarray) -> None:
    target = tmp_path / "grid.png"
    figures.save_corruption_grid(target, grey, _rows(grey, CORRUPTIONS), "pneumoniamnist: MedMNIST-C")
    pixels = _read_png(target)
    height, width, _ = pixels.shape
    assert height > width  # 15 rows x 6 columns
    assert height >= 15 * 80 and width >= 6 * 80  # each 28 px image gets room to show its pixels
    assert pixels.std() > 0
    # a grey image drawn with the gray colormap leaves no coloured pixel (viridis would)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])


def test_rgb_grid_keeps_colour(tmp_path: Path, rgb: np.ndarray) -> None:
    target = tmp_path / "grid_rgb.png"
    figures.save_corruption_grid(target, rgb, _rows(rgb, ["pixelate", "saturate"]), "bloodmnist")
    pixels = _read_png(target).astype(int)
    assert pixels.std() > 0
    assert (pixels[..., 0] - pixels[..., 2] > 100).mean() > 0.05  # the red images are there


def test_grid_layout_labels_and_pixel_scale(grey: np.ndarray) -> None:
    names = ["pixelate", "gaussian_noise", "motion_blur"]
    fig = figures._grid_figure(grey, _rows(grey, names), "t")
    axes = fig.axes
    assert len(axes) == 3 * 6
    assert [ax.get_title() for ax in axes[:6]] == ["clean", *SEVERITY_LABELS]
    assert [axes[6 * r].get_ylabel() for r in range(3)] == names
    for ax in axes:
        (image,) = ax.get_images()
        assert image.get_interpolation() == "nearest"
        assert image.get_cmap().name == "gray"
        assert image.get_clim() == (0, 255)  # fixed scale: no per-image contrast stretch
        assert len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0
    # the clean column shows the clean image, the others the corrupted ones, in order
    np.testing.assert_array_equal(axes[0].get_images()[0].get_array(), grey[:, :, 0])


@pytest.mark.parametrize(
    ("clean", "rows", "match"),
    [
        (np.zeros((28, 28, 1), np.float32), {"a": [np.zeros((28, 28, 1), np.uint8)]}, "uint8"),
        (np.zeros((28, 28, 2), np.uint8), {"a": [np.zeros((28, 28, 2), np.uint8)]}, "channels"),
        (np.zeros((28, 28, 1), np.uint8), {"a": [np.zeros((32, 32, 1), np.uint8)]}, "differs"),
        (np.zeros((28, 28, 1), np.uint8), {}, "at least one"),
        (
            np.zeros((28, 28, 1), np.uint8),
            {"a": [np.zeros((28, 28, 1), np.uint8)] * 5, "b": [np.zeros((28, 28, 1), np.uint8)] * 4},
            "same",
        ),
    ],
)
def test_grid_rejects_bad_input_without_writing(
    tmp_path: Path, clean: np.ndarray, rows: dict[str, list[np.ndarray]], match: str
) -> None:
    target = tmp_path / "grid.png"
    with pytest.raises(ValueError, match=match):
        figures.save_corruption_grid(target, clean, rows, "t")
    assert list(tmp_path.iterdir()) == []


def test_heatmap_with_nan_and_negatives_writes_png(tmp_path: Path) -> None:
    target = tmp_path / "heat.png"
    figures.save_heatmap(
        target,
        _heat_values(),
        CORRUPTIONS,
        SEVERITY_LABELS,
        "Accuracy drop",
        "accuracy drop (clean - corrupted)",
    )
    pixels = _read_png(target)
    height, width, _ = pixels.shape
    assert 300 <= width <= 4000 and 300 <= height <= 4000
    assert pixels.std() > 0
    grey_cell = np.all(pixels == (0xD9, 0xD9, 0xD9), axis=-1)  # the NaN cell's colour is drawn
    assert grey_cell.sum() > 100


def test_heatmap_scale_text_and_colorbar() -> None:
    values = _heat_values()
    fig = figures._heatmap_figure(values, CORRUPTIONS, SEVERITY_LABELS, "t", "accuracy drop")
    ax, colorbar_ax = fig.axes
    (image,) = ax.get_images()
    vmin, vmax = image.get_clim()
    assert vmin == -vmax == -np.nanmax(np.abs(values))  # mixed signs: centred at 0
    assert image.get_cmap().name.startswith("RdBu_r")
    assert colorbar_ax.get_ylabel() == "accuracy drop"
    texts = {(round(t.get_position()[0]), round(t.get_position()[1])): t for t in ax.texts}
    assert len(texts) == values.size - 1  # every finite cell labelled, the NaN cell left blank
    assert (3, 2) not in texts
    assert texts[(0, 0)].get_text() == "-0.200"
    assert texts[(1, 0)].get_text() == f"{values[0, 1]:.3f}"
    assert [t.get_text() for t in ax.get_yticklabels()] == CORRUPTIONS
    assert [t.get_text() for t in ax.get_xticklabels()] == SEVERITY_LABELS


def test_heatmap_text_colour_contrasts_with_cell() -> None:
    values = np.array([[-1.0, 0.0, 1.0]])  # dark blue, white, dark red
    fig = figures._heatmap_figure(values, ["r"], ["a", "b", "c"], "t", "v")
    colours = [t.get_color() for t in sorted(fig.axes[0].texts, key=lambda t: t.get_position()[0])]
    assert colours == ["white", "black", "white"]


def test_heatmap_one_sign_uses_sequential_scale_anchored_at_zero() -> None:
    positive = figures._heatmap_figure(np.array([[0.1, 0.4]]), ["r"], ["a", "b"], "t", "v")
    (image,) = positive.axes[0].get_images()
    assert image.get_clim() == (0.0, 0.4) and image.get_cmap().name.startswith("Reds")
    negative = figures._heatmap_figure(np.array([[-0.1, -0.4]]), ["r"], ["a", "b"], "t", "v")
    (image,) = negative.axes[0].get_images()
    assert image.get_clim() == (-0.4, 0.0) and image.get_cmap().name.startswith("Blues")


def test_heatmap_no_negative_zero_and_all_nan(tmp_path: Path) -> None:
    fig = figures._heatmap_figure(np.array([[-0.0001, 0.5]]), ["r"], ["a", "b"], "t", "v")
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["0.000", "0.500"]
    target = tmp_path / "nan.png"
    figures.save_heatmap(target, np.full((2, 2), math.nan), ["a", "b"], ["c", "d"], "t", "v")
    assert _read_png(target).std() > 0


def test_heatmap_rejects_label_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not match"):
        figures.save_heatmap(tmp_path / "h.png", np.zeros((2, 3)), ["a", "b"], ["c", "d"], "t", "v")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("which", ["grid", "heatmap"])
def test_failure_mid_render_keeps_existing_file_and_no_temp(
    tmp_path: Path, grey: np.ndarray, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    from matplotlib.figure import Figure

    target = tmp_path / "out.png"
    target.write_bytes(b"previous figure")
    before = sorted(p.name for p in tmp_path.iterdir())

    def broken_savefig(self: Figure, fname: object, **kwargs: object) -> None:
        fname.write(b"\x89PNG\r\n\x1a\n half")  # type: ignore[attr-defined]  # a partial write, then a crash
        raise RuntimeError("renderer died")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer died"):
        if which == "grid":
            figures.save_corruption_grid(target, grey, _rows(grey, ["pixelate"]), "t")
        else:
            figures.save_heatmap(target, _heat_values(), CORRUPTIONS, SEVERITY_LABELS, "t", "v")
    assert target.read_bytes() == b"previous figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_success_replaces_existing_file(tmp_path: Path, grey: np.ndarray) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"stale")
    figures.save_corruption_grid(target, grey, _rows(grey, ["pixelate"]), "t")
    assert _read_png(target).std() > 0
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    assert os.stat(target).st_mode & 0o044  # group/other can read it, unlike a bare mkstemp file


def test_missing_folder_raises_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="No such file or directory"):
        figures.save_heatmap(tmp_path / "nope" / "h.png", np.zeros((1, 1)), ["a"], ["b"], "t", "v")
    assert list(tmp_path.iterdir()) == []


def test_importing_figures_does_not_import_matplotlib() -> None:
    code = "import sys, medaudit.report.figures; sys.exit('matplotlib' in sys.modules)"
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
