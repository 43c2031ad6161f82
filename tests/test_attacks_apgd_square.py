"""APGD-CE / APGD-DLR and the Square Attack on small trained CNNs (torch and ONNX)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medaudit.attacks.apgd import APGD, APGDCE, APGDDLR, checkpoints
from medaudit.attacks.base import attacks, is_correct
from medaudit.attacks.square import Square, pattern
from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.models import AuditModel, InputSpec, LoadOptions, bind_model, load_model
from medaudit.models.wrapper import ModelInfo
from medaudit.task import Task

SIZE = 28
N_TEST = 200
EPS = {"linf": 8 / 255, "l2": 0.5}


# --------------------------------------------------------------------------- a small vulnerable model


def stripes(n: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Faint sinusoidal stripes whose orientation is the class (horizontal, diagonal, anti-diagonal)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    i = torch.arange(SIZE).float()
    rows, cols = i.view(1, -1, 1).expand(n, SIZE, SIZE), i.view(1, 1, -1).expand(n, SIZE, SIZE)
    coord = torch.where(
        (y == 0).view(-1, 1, 1), rows, torch.where((y == 1).view(-1, 1, 1), rows + cols, rows - cols)
    )
    phase = torch.rand(n, 1, 1, generator=g) * 6.28
    amplitude = 0.1 + 0.1 * torch.rand(n, 1, 1, generator=g)
    image = 0.5 + amplitude * torch.sin(1.3 * coord + phase) + 0.05 * torch.randn(n, SIZE, SIZE, generator=g)
    return image.clamp(0, 1)[:, None], y


def tiny_cnn(num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )


def wrap(network: nn.Module, channels: int = 1, size: int | None = SIZE) -> AuditModel:
    spec = InputSpec(channels=channels, input_size=size)
    return AuditModel(network, spec, ModelInfo(path="", format="test", sha256="", parameters=None))


def to_data(x: torch.Tensor, y: torch.Tensor, task: Task, num_classes: int) -> AuditData:
    images = (x * 255).round().to(torch.uint8)
    return AuditData(images, y, task, tuple(f"c{i}" for i in range(num_classes)))


@dataclass
class Setup:
    network: nn.Module
    model: AuditModel
    data: AuditData
    x: torch.Tensor
    y: torch.Tensor

    def accuracy(self, x_adv: torch.Tensor, model: AuditModel | None = None) -> float:
        model = model or self.model
        return is_correct(model.predict(x_adv), self.y, model.task).float().mean().item()


def trained(num_classes: int, seed: int = 0) -> Setup:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = tiny_cnn(num_classes)
        x, y = stripes(256, num_classes, seed + 1)
        optimiser = torch.optim.Adam(network.parameters(), lr=2e-2)
        order = torch.Generator().manual_seed(seed)
        for _ in range(80):
            idx = torch.randint(0, len(x), (64,), generator=order)
            loss = F.cross_entropy(network(x[idx]), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    network.eval()
    model = wrap(network)
    x_test, y_test = stripes(N_TEST, num_classes, seed + 2)
    data = to_data(x_test, y_test, Task.BINARY if num_classes == 2 else Task.MULTI_CLASS, num_classes)
    bind_model(model, data)
    return Setup(network, model, data, data.float_images(0, data.n), data.labels)


@pytest.fixture(scope="module")
def three() -> Setup:
    setup = trained(3)
    assert setup.accuracy(setup.x) == 1.0
    return setup


@pytest.fixture(scope="module")
def binary() -> Setup:
    setup = trained(2)
    assert setup.accuracy(setup.x) == 1.0
    return setup


@pytest.fixture(scope="module")
def onnx_model(three: Setup, tmp_path_factory: pytest.TempPathFactory) -> AuditModel:
    """The 3-class CNN exported to ONNX and loaded black-box (onnxruntime only)."""
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            three.network,
            (torch.zeros(2, 1, SIZE, SIZE),),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
    model = load_model(path, LoadOptions(device="cpu"))
    bind_model(model, three.data)
    model.twin_verified = False  # force black-box: gradients are off
    assert model.is_onnx and not model.has_gradients
    return model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and OpenMP spinning on a busy 2-core CPU is erratic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_within_budget(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str) -> None:
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert delta.norm(dim=1).max() <= eps + 1e-5


# --------------------------------------------------------------------------- interface


def test_registered_with_their_names() -> None:
    assert attacks.get("apgd-ce") is APGDCE
    assert attacks.get("apgd-dlr") is APGDDLR
    assert attacks.get("square") is Square
    assert APGDCE().steps == 100 and APGDCE().restarts == 1 and APGDCE().rho == 0.75
    assert Square().queries == 1000 and Square().p_init == 0.8 and Square().restarts == 1
    assert Square.needs_gradients is False and APGDCE.needs_gradients is True


@pytest.mark.parametrize(
    "make",
    [
        lambda: APGDCE(steps=0),
        lambda: APGDDLR(restarts=0),
        lambda: APGDCE(rho=0.0),
        lambda: Square(queries=0),
        lambda: Square(p_init=1.5),
        lambda: Square(restarts=0),
    ],
)
def test_invalid_hyperparameters(make) -> None:
    with pytest.raises(ConfigError):
        make()


def test_checkpoints_follow_the_paper() -> None:
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1000)[:4] == [0, 220, 410, 570]
    assert checkpoints(1) == [0, 1]


def test_effective_loss() -> None:
    assert APGDDLR.effective_loss(3, Task.MULTI_CLASS) == "dlr"
    assert APGDDLR.effective_loss(5, Task.ORDINAL) == "dlr"
    assert APGDDLR.effective_loss(2, Task.BINARY) == "margin"
    assert APGDDLR.effective_loss(14, Task.MULTI_LABEL) == "margin"
    assert APGDCE.effective_loss(2, Task.BINARY) == "ce"
    assert APGDCE().effective_loss(14, Task.MULTI_LABEL) == "ce"


def test_square_sides_scale_with_the_image() -> None:
    square = Square(queries=1000)
    assert [square.side(i, 28, 28, "linf") for i in (1, 11, 51, 999)] == [25, 13, 6, 1]
    assert [square.side(i, 224, 224, "linf") for i in (1, 11, 51, 999)] == [200, 100, 50, 9]
    assert square.side(999, 28, 28, "l2") == 3  # the L2 pattern needs a few pixels
    assert square.side(1, 8, 8, "linf") == 7  # never the whole image
    # the schedule is rescaled to the budget: at 100 queries iteration 1 is iteration 100 of 10 000
    assert Square(queries=100).fraction(1) == pytest.approx(0.8 / 4)
    eta = pattern(6)
    assert eta.norm() == pytest.approx(1.0)
    assert eta[:, :3].sum() > 0 > eta[:, 3:].sum()  # two opposite-signed halves


# --------------------------------------------------------------------------- budgets


ATTACKS = {
    "apgd-ce": APGDCE(steps=10),
    "apgd-dlr": APGDDLR(steps=10),
    "square": Square(queries=60),
}


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_budget_is_respected(name: str, norm: str, three: Setup) -> None:
    x, y = three.x[:60], three.y[:60]
    for eps in (EPS[norm], 4 * EPS[norm]):
        x_adv = ATTACKS[name](three.model, x, y, eps=eps, norm=norm, generator=seeded())
        assert_within_budget(x, x_adv, eps, norm)
    assert torch.equal(ATTACKS[name](three.model, x, y, eps=0.0, norm=norm, generator=seeded()), x)


# --------------------------------------------------------------------------- APGD


def test_apgd_ce_lowers_accuracy(three: Setup) -> None:
    clean = three.accuracy(three.x)
    moderate = three.accuracy(
        APGDCE()(three.model, three.x, three.y, eps=16 / 255, norm="linf", generator=seeded())
    )
    assert moderate < clean - 0.5
    huge = three.accuracy(
        APGDCE(steps=50)(three.model, three.x, three.y, eps=0.5, norm="linf", generator=seeded())
    )
    assert huge == 0.0
    l2 = three.accuracy(
        APGDCE(steps=50)(three.model, three.x, three.y, eps=2.0, norm="l2", generator=seeded())
    )
    assert l2 <= 0.02


def test_apgd_dlr_on_three_classes(three: Setup) -> None:
    x_adv = APGDDLR()(three.model, three.x, three.y, eps=16 / 255, norm="linf", generator=seeded())
    assert_within_budget(three.x, x_adv, 16 / 255, "linf")
    assert three.accuracy(x_adv) < three.accuracy(three.x) - 0.5


@dataclass(frozen=True)
class _APGDMargin(APGD):
    name: ClassVar[str] = "apgd-margin-test"
    loss: ClassVar[str] = "margin"


def test_apgd_dlr_falls_back_to_margin_on_binary(binary: Setup) -> None:
    assert APGDDLR.effective_loss(binary.model.predict(binary.x[:1]).shape[1], binary.model.task) == "margin"
    eps = 16 / 255
    x_adv = APGDDLR(steps=30)(binary.model, binary.x, binary.y, eps=eps, norm="linf", generator=seeded())
    assert_within_budget(binary.x, x_adv, eps, "linf")
    assert binary.accuracy(x_adv) < binary.accuracy(binary.x) - 0.2
    same = _APGDMargin(steps=30)(binary.model, binary.x, binary.y, eps=eps, norm="linf", generator=seeded())
    assert torch.equal(x_adv, same)


def test_multi_label_model(three: Setup) -> None:
    """Three independent findings; every attack runs, stays in budget, and lowers exact-match accuracy."""
    labels = F.one_hot(three.y, 3)
    labels[:, 0] = 1 - labels[:, 0]  # not one-hot any more: [c0 absent/present] flipped
    data = AuditData(three.data.images, labels, Task.MULTI_LABEL, ("a", "b", "c"))
    model = wrap(three.network)
    bind_model(model, data)
    assert model.task is Task.MULTI_LABEL
    assert APGDDLR.effective_loss(3, model.task) == "margin"
    x = three.x[:60]
    y = labels[:60]
    for attack in (APGDCE(steps=20), APGDDLR(steps=20), Square(queries=100)):
        x_adv = attack(model, x, y, eps=0.3, norm="linf", generator=seeded())
        assert_within_budget(x, x_adv, 0.3, "linf")
        clean = is_correct(model.predict(x), y, model.task).float().mean()
        robust = is_correct(model.predict(x_adv), y, model.task).float().mean()
        assert robust <= clean


def test_apgd_refuses_a_black_box_model(onnx_model: AuditModel, three: Setup) -> None:
    with pytest.raises(ConfigError, match="square"):
        APGDCE(steps=2)(onnx_model, three.x[:4], three.y[:4], eps=0.1, norm="linf", generator=seeded())


def test_apgd_returns_the_first_misclassified_point_and_restarts_only_the_rest(three: Setup) -> None:
    seen: list[int] = []
    hook = three.network.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    try:
        x_adv = APGDCE(steps=50, restarts=3)(
            three.model, three.x, three.y, eps=0.5, norm="linf", generator=seeded()
        )
        with_restarts = sum(seen)
        seen.clear()
        APGDCE(steps=50)(three.model, three.x, three.y, eps=0.5, norm="linf", generator=seeded())
    finally:
        hook.remove()
    assert three.accuracy(x_adv) == 0.0
    assert with_restarts == sum(seen)  # everything fooled in the first run: no restart ran
    assert with_restarts < 0.5 * N_TEST * 52  # fooled samples stop being attacked (52 = clean + 51 iterates)


# --------------------------------------------------------------------------- Square


def test_square_black_box_on_onnx(
    onnx_model: AuditModel, three: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_forward(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("Square must only call model.predict")

    monkeypatch.setattr(onnx_model, "forward", no_forward)
    monkeypatch.setattr(torch.Tensor, "backward", no_forward)
    monkeypatch.setattr(torch.autograd, "grad", no_forward)
    torch.testing.assert_close(onnx_model.predict(three.x), three.model.predict(three.x), atol=1e-4, rtol=0)
    clean = three.accuracy(three.x, onnx_model)
    for eps, norm in ((0.15, "linf"), (3.0, "l2")):
        x_adv = Square(queries=300)(onnx_model, three.x, three.y, eps=eps, norm=norm, generator=seeded())
        assert_within_budget(three.x, x_adv, eps, norm)
        assert three.accuracy(x_adv, onnx_model) < clean - 0.5


def test_square_stops_querying_fooled_samples(three: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    predict = three.model.predict

    def counting(x: torch.Tensor) -> torch.Tensor:
        asked.append(len(x))
        return predict(x)

    monkeypatch.setattr(three.model, "predict", counting)
    queries = 200
    x_adv = Square(queries=queries)(three.model, three.x, three.y, eps=0.5, norm="linf", generator=seeded())
    assert three.accuracy(x_adv) < 0.2
    assert sum(asked) < 0.25 * N_TEST * queries  # fooled samples are not queried again
    asked.clear()
    x, y = three.x[:40], three.y[:40]
    Square(queries=queries)(three.model, x, y, eps=2 / 255, norm="linf", generator=seeded())
    assert max(asked) <= len(x)
    assert len(asked) <= queries + 1  # the clean check, the start, then one query per iteration


def test_square_other_sizes_and_channels() -> None:
    for channels, size in ((1, 64), (3, 64), (3, 224)):
        with torch.random.fork_rng():
            torch.manual_seed(size)
            network = nn.Sequential(
                nn.Conv2d(channels, 4, 5, stride=4),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(4, 3),
            ).eval()
        model = wrap(network, channels=channels, size=None)
        model.task = Task.MULTI_CLASS
        x = torch.rand(4, channels, size, size, generator=seeded(size))
        y = model.predict(x).argmax(dim=1)  # all correct: every image is attacked
        for eps, norm in ((8 / 255, "linf"), (1.0, "l2")):
            x_adv = Square(queries=30)(model, x, y, eps=eps, norm=norm, generator=seeded())
            assert_within_budget(x, x_adv, eps, norm)
            assert (x_adv != x).flatten(1).any(dim=1).all()


# --------------------------------------------------------------------------- determinism and degenerate models


@pytest.mark.parametrize(
    ("attack", "norm", "eps"),
    [
        (APGDCE(steps=20), "linf", 8 / 255),
        (APGDCE(steps=20), "l2", 0.5),
        (Square(queries=100), "linf", 8 / 255),
        (Square(queries=100), "l2", 0.5),
    ],
)
def test_same_seed_same_result(three: Setup, attack, norm: str, eps: float) -> None:
    x, y = three.x[:60], three.y[:60]
    first = attack(three.model, x, y, eps=eps, norm=norm, generator=seeded(7))
    again = attack(three.model, x, y, eps=eps, norm=norm, generator=seeded(7))
    other = attack(three.model, x, y, eps=eps, norm=norm, generator=seeded(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


class Constant(nn.Module):
    """Always predicts class 0 (depends on the input only through a zero weight, so gradients exist)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([2.0, 0.0, -1.0]) + 0.0 * x.mean(dim=(1, 2, 3))[:, None]


@pytest.mark.parametrize("attack", [APGDCE(steps=20), APGDDLR(steps=20), Square(queries=100)])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_constant_model_keeps_its_clean_accuracy(three: Setup, attack, norm: str) -> None:
    model = wrap(Constant())
    bind_model(model, three.data)
    x, y = three.x[:30], three.y[:30]
    clean = is_correct(model.predict(x), y, model.task)
    eps = 0.5 if norm == "linf" else 5.0
    x_adv = attack(model, x, y, eps=eps, norm=norm, generator=seeded())
    assert_within_budget(x, x_adv, eps, norm)
    assert torch.equal(is_correct(model.predict(x_adv), y, model.task), clean)
    assert torch.equal(x_adv[~clean], x[~clean])  # already misclassified: returned unchanged


# --------------------------------------------------------------------------- cross-check


@pytest.mark.slow
def test_apgd_ce_is_as_strong_as_torchattacks(three: Setup) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    eps, steps = 8 / 255, 50
    ours = APGDCE(steps=steps)(three.model, three.x, three.y, eps=eps, norm="linf", generator=seeded())
    theirs = torchattacks.APGD(
        three.model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=0
    )(three.x, three.y)
    ours_correct = int(is_correct(three.model.predict(ours), three.y, three.model.task).sum())
    theirs_correct = int(is_correct(three.model.predict(theirs), three.y, three.model.task).sum())
    assert 0 < theirs_correct < N_TEST  # an informative eps: neither all nor none robust
    assert ours_correct <= theirs_correct + 2
