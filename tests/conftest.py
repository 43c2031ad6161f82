"""Shared fixtures: seeded tiny CNNs, synthetic data files and the real MedMNIST folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

from medaudit.data import AuditData  # noqa: E402
from medaudit.models.archs.small_cnn import SmallCNN  # noqa: E402
from medaudit.task import Task  # noqa: E402

DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data" / "medmnist"
REAL_DATA_FIXTURES = frozenset({"real_data_root", "real_env"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that reads the real MedMNIST files, directly or through another fixture,
    ``real_data`` (``make test-fast`` leaves them out; ``make test`` and CI run them)."""
    for item in items:
        if REAL_DATA_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_data)


def seeded_cnn(in_channels: int = 1, num_classes: int = 2, width: int = 4, seed: int = 0) -> SmallCNN:
    """A SmallCNN with seeded weights and non-trivial BatchNorm parameters and statistics, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SmallCNN(in_channels, num_classes, width=width)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.2, 0.2)
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 1.5)
            # default init gives near-constant logits after global pooling; spread them out so
            # comparisons between formats and images are not trivially within tolerance
            model.classifier.weight.mul_(30.0)
    return model.eval()


def assert_one_line_error(result, *needles: str, code: int = 2) -> str:
    """The documented exit code and exactly one 'error:' line on stderr naming every needle; no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def train_cnn(
    images: torch.Tensor, labels: torch.Tensor, steps: int, *, width: int = 4, lr: float = 0.02, seed: int = 0
) -> SmallCNN:
    """A SmallCNN trained with Adam on random batches of 64 (seeded, leaves the global RNG alone)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = SmallCNN(images.shape[1], int(labels.max()) + 1, width=width)
        optimiser = torch.optim.Adam(network.parameters(), lr=lr)
        network.train()
        for _ in range(steps):
            index = torch.randint(0, len(images), (64,))
            loss = torch.nn.functional.cross_entropy(network(images[index]), labels[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return network.eval()


@pytest.fixture(scope="session")
def make_cnn() -> Callable[..., SmallCNN]:
    """Factory: ``make_cnn(in_channels=1, num_classes=2, width=4, seed=0)``."""
    return seeded_cnn


def random_images(n: int, channels: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    """uint8 noise with a different brightness per image (so models tell the images apart)."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, channels, size, size, generator=generator)
    brightness = torch.rand(n, 1, 1, 1, generator=generator)
    return ((noise + brightness) * 127.5).round().to(torch.uint8)


def make_audit_data(
    n: int = 12,
    channels: int = 1,
    size: int = 28,
    num_classes: int = 2,
    seed: int = 0,
    class_names: tuple[str, ...] | None = None,
) -> AuditData:
    """Synthetic data; its classes are named c0, c1, ... unless ``class_names`` (a card's) is given."""
    labels = torch.arange(n) % num_classes
    task = Task.BINARY if num_classes == 2 else Task.MULTI_CLASS
    return AuditData(
        images=random_images(n, channels, size, seed),
        labels=labels,
        task=task,
        class_names=class_names or tuple(f"c{i}" for i in range(num_classes)),
        identity={"source": "synthetic"},
    )


@pytest.fixture(scope="session")
def audit_data() -> Callable[..., AuditData]:
    """Factory: ``audit_data(n=12, channels=1, size=28, num_classes=2, seed=0, class_names=None)``
    (uint8 images)."""
    return make_audit_data


@pytest.fixture
def write_npz(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``write_npz(name, **arrays)`` saves an .npz under tmp_path and returns its path."""

    def write(name: str = "data.npz", **arrays: np.ndarray) -> Path:
        path = tmp_path / name
        np.savez(path, **arrays)
        return path

    return write


@pytest.fixture
def synthetic_npz(write_npz: Callable[..., Path]) -> Path:
    """MedMNIST layout: train/test splits, N x H x W uint8 images, (N, 1) labels 0/1."""
    rng = np.random.default_rng(0)
    return write_npz(
        "synthetic.npz",
        train_images=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        train_labels=(np.arange(20) % 2).reshape(-1, 1),
        test_images=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        test_labels=(np.arange(10) % 2).reshape(-1, 1),
    )


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The folder with the real MedMNIST files; CI must have it, elsewhere its absence skips."""
    root = Path(os.environ.get("MEDAUDIT_DATA_ROOT", DEFAULT_DATA_ROOT))
    if not root.is_dir():
        message = f"real MedMNIST data folder {root} is missing (set MEDAUDIT_DATA_ROOT)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must use the real data: {message}")
        pytest.skip(message)
    return root


def as_multi_label(data: AuditData) -> AuditData:
    """The same images as a three-label multi-label task (all labels 0): for the audits that refuse one."""
    return AuditData(
        images=data.images,
        labels=torch.zeros(data.n, 3, dtype=torch.long),
        task=Task.MULTI_LABEL,
        class_names=("a", "b", "c"),
    )


@pytest.fixture
def toy_files(tmp_path: Path) -> tuple[Path, Path]:
    """A traced tiny CNN (``seeded_cnn``) and 40 synthetic two-class 28 px images beside it (npz)."""
    model = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(seeded_cnn().eval(), torch.zeros(2, 1, 28, 28)), str(model))
    data = tmp_path / "data.npz"
    labels = (np.arange(40) % 2).reshape(-1, 1)
    np.savez(data, test_images=random_images(40)[:, 0].numpy(), test_labels=labels)
    return model, data


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def real_env(real_data_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real MedMNIST folder as $MEDAUDIT_DATA_ROOT for commands that read the model card's dataset."""
    monkeypatch.setenv("MEDAUDIT_DATA_ROOT", str(real_data_root))
    return real_data_root


CLI_PROBE = """
import json, sys
from medaudit.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def fresh_cli(*args: str, cwd: Path) -> tuple[dict, str]:
    """Run the CLI in a fresh interpreter: its exit code and whether torch was imported (a
    dict), and its stderr; start-up tests check what an answer had to import."""
    result = subprocess.run(
        [sys.executable, "-c", CLI_PROBE, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr
