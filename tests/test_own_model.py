"""Auditing your own model, tried as a new user would (issue #21): a factory module in the current
folder or beside the audit file, paths relative to the audit file, a gate policy written as the docs
show it, and an ONNX model whose weights sit in a separate ``.data`` file."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from typer.testing import CliRunner

from medaudit.audit_config import EXAMPLE, read_audit_file
from medaudit.cli import app
from medaudit.errors import ConfigError, ModelLoadError, PolicyError
from medaudit.gate import load_policy
from medaudit.models import LoadOptions, load_model
from medaudit.models.archs.small_cnn import SmallCNN

REPO = Path(__file__).resolve().parents[1]
SAMPLE = "sample_models/pneumoniamnist_rescnn.pt"

FACTORY = (
    "from pathlib import Path\n"
    "from medaudit.models.archs.small_cnn import SmallCNN\n\n"
    "IMPORTED = Path(__file__).with_name('imported.txt')\n"
    "IMPORTED.write_text('imported')\n\n"
    "def small(in_channels, num_classes):\n"
    "    return SmallCNN(in_channels, num_classes, width=4)\n"
)


@pytest.fixture
def forget_modules() -> Iterator[Callable[[str], str]]:
    """``forget(name)`` returns ``name`` and drops that module from sys.modules after the test;
    sys.path must be as it was (the factory's folder is on it only while it is imported)."""
    names: list[str] = []
    path_before = list(sys.path)

    def forget(name: str) -> str:
        names.append(name)
        return name

    yield forget
    for name in names:
        sys.modules.pop(name, None)
    assert sys.path == path_before


def weights(folder: Path, width: int = 4) -> Path:
    """A SmallCNN state_dict (width 32 is what the built-in 'smallcnn' builds)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "weights.pt"
    torch.save(SmallCNN(1, 2, width=width).state_dict(), path)
    return path


def small_npz(folder: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    path = folder / "data.npz"
    np.savez(path, images=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), labels=np.arange(n) % 2)
    return path


# --------------------------------------------------------------------------- stumble 1: where factories are found


def test_arch_factory_is_found_in_the_current_folder(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_modules: Callable[[str], str]
) -> None:
    project = tmp_path / "project"
    model = weights(project)
    module = forget_modules("own_models_cwd")
    (project / f"{module}.py").write_text(FACTORY)
    monkeypatch.chdir(project)

    # a card naming the same factory is still refused, and nothing is imported for it
    model.with_suffix(".json").write_text(json.dumps({"arch": f"{module}:small"}))
    assert_one_line_error(runner.invoke(app, ["info", str(model)]), "a card may only name built-in")
    assert not (project / "imported.txt").exists() and module not in sys.modules

    result = runner.invoke(app, ["info", "weights.pt", "--arch", f"{module}:small"])
    assert result.exit_code == 0, result.output
    assert (project / "imported.txt").exists()
    assert str(project) not in sys.path  # only for that import


def test_missing_factory_module_names_where_it_looked(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = weights(tmp_path)
    monkeypatch.chdir(tmp_path)
    line = assert_one_line_error(
        runner.invoke(app, ["info", str(model), "--arch", "no_such_own_models:small"]),
        f"no module 'no_such_own_models' in {tmp_path} or on sys.path",
        "PYTHONPATH",
    )
    assert "no_such_own_models.py" in line


def test_audit_file_arch_is_found_in_the_audit_files_folder(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_modules: Callable[[str], str]
) -> None:
    audits = tmp_path / "audits"
    weights(audits)
    small_npz(audits)
    module = forget_modules("own_models_audit")
    (audits / f"{module}.py").write_text(FACTORY)
    audit = audits / "audit.toml"
    audit.write_text(
        f'[model]\npath = "weights.pt"\narch = "{module}:small"\n[data]\ndata = "data.npz"\n[eval]\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["run", "../audits/audit.toml"])
    assert result.exit_code == 0, result.output
    assert (audits / "imported.txt").exists()

    # not found beside the audit file: the error names that folder
    audit.write_text(audit.read_text().replace(module, "no_such_own_models_audit"))
    assert_one_line_error(
        runner.invoke(app, ["run", "../audits/audit.toml"]),
        f"no module 'no_such_own_models_audit' in {audits} or on sys.path",
    )


def test_the_library_does_not_search_the_current_folder_unasked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_modules: Callable[[str], str]
) -> None:
    model = weights(tmp_path)
    module = forget_modules("own_models_lib")
    (tmp_path / f"{module}.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"no module '{module}' on sys.path"):
        load_model(model, LoadOptions(device="cpu", arch=f"{module}:small"))
    loaded = load_model(model, LoadOptions(device="cpu", arch=f"{module}:small", arch_search=tmp_path))
    assert loaded.info.arch == f"{module}:small"


# --------------------------------------------------------------------------- stumble 4: paths relative to the file


def test_init_in_a_subfolder_writes_paths_that_work_from_there(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = tmp_path / "checkout"  # stands for a checkout of the repository
    checkout.mkdir()
    (checkout / "sample_models").symlink_to(REPO / "sample_models", target_is_directory=True)
    (checkout / "sub" / "dir").mkdir(parents=True)
    monkeypatch.chdir(checkout)
    assert runner.invoke(app, ["init", "sub/dir/audit.toml"]).exit_code == 0
    audit = read_audit_file(Path("sub/dir/audit.toml"))
    assert audit.raw["model"]["path"] == f"../../{SAMPLE}"
    assert audit.model.path is not None and audit.model.path.is_file()

    # in the current folder, the example is written as it is
    assert runner.invoke(app, ["init", "audit.toml"]).exit_code == 0
    assert Path("audit.toml").read_text() == EXAMPLE

    # from the repository, to a folder elsewhere
    monkeypatch.chdir(REPO)
    target = tmp_path / "elsewhere" / "audit.toml"
    target.parent.mkdir()
    assert runner.invoke(app, ["init", str(target)]).exit_code == 0
    model = read_audit_file(target).model.path
    assert model is not None and model.resolve() == (REPO / SAMPLE).resolve()


def test_missing_model_says_paths_are_relative_to_the_audit_file(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "audit.toml").write_text(f'[model]\npath = "{SAMPLE}"\n[eval]\n')
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(
        runner.invoke(app, ["run", "out/audit.toml"]),
        f"model file out/{SAMPLE} does not exist",
        f'[model] path = "{SAMPLE}" in out/audit.toml',
        "relative to the audit file's folder (out), not to the current folder",
    )
    weights(out)
    (out / "audit.toml").write_text(
        '[model]\npath = "weights.pt"\narch = "smallcnn"\n[data]\ndata = "d.npz"\n[eval]\n'
    )
    assert_one_line_error(
        runner.invoke(app, ["run", "out/audit.toml"]),
        "data path out/d.npz does not exist",
        "relative to the audit file's folder",
    )


# --------------------------------------------------------------------------- stumble 5: policy forms


TOP_LEVEL = '"eval.auc" = ">= 0.995"\n"eval.accuracy" = { min = 0.5 }\n'


def test_policy_rules_at_the_top_level_or_in_a_gate_table(tmp_path: Path) -> None:
    top, table = tmp_path / "top.toml", tmp_path / "table.toml"
    top.write_text(TOP_LEVEL)
    table.write_text("[gate]\n" + TOP_LEVEL)
    expected = [("eval.auc", ">=", 0.995), ("eval.accuracy", ">=", 0.5)]
    for path in (top, table):
        assert [(r.metric, r.op, r.threshold) for r in load_policy(path)] == expected
    sections = tmp_path / "sections.toml"
    sections.write_text('[eval]\nauc = ">= 0.9"\n[attack]\n"robust_accuracy@1/255" = ">= 0.5"\n')
    assert [r.metric for r in load_policy(sections)] == ["eval.auc", "attack.robust_accuracy@1/255"]


def test_the_example_policy_in_the_docs_loads() -> None:
    rules = load_policy(REPO / "docs" / "policy-example.toml")
    assert {r.metric for r in rules} >= {"eval.auc", "attack.robust_accuracy@1/255", "shift.mean_be"}


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            '"eval.accuracy" = ">= 0.5"\n[gate]\n"eval.auc" = ">= 0.9"\n',
            ["mixes a gate table", "eval.accuracy"],
        ),
        ('[model]\npath = "m.pt"\n[gate]\n"eval.auc" = ">= 0.9"\n', ["mixes a gate table", "model"]),
        (
            '"eval.auc" = ">= 0.9"\n[model]\npath = "m.pt"\n',
            ["no gate table", "its table model holds no rules"],
        ),
        ('gate = ">= 0.9"\n', ["gate must be a table"]),
    ],
)
def test_policy_mixing_forms_or_other_tables_is_refused(
    runner: CliRunner, tmp_path: Path, text: str, needles: list[str]
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    for needle in needles:
        assert needle in str(info.value)


def test_top_level_policy_gates_run_shards_and_the_merge(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights(tmp_path, width=32)
    small_npz(tmp_path, 64)  # two blocks of 32: one per shard
    audit = tmp_path / "audit.toml"
    audit.write_text(
        '[model]\npath = "weights.pt"\narch = "smallcnn"\n[data]\ndata = "data.npz"\n[run]\nbatch_size = 4\n[eval]\n'
    )
    policy = tmp_path / "policy.toml"
    policy.write_text('"eval.accuracy" = ">= 0"\n"eval.auc" = "> 1"\n')
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "audit.toml", "--policy", "policy.toml", "--json", "whole.json"])
    assert result.exit_code == 1, result.output  # the AUC rule fails on purpose
    verdicts = json.loads(Path("whole.json").read_text())["gate"]
    assert [v["passed"] for v in verdicts] == [True, False]
    for index in (0, 1):
        args = [
            "run",
            "audit.toml",
            "--policy",
            "policy.toml",
            "--shard",
            f"{index}/2",
            "--json",
            f"p{index}.json",
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["merge", "p0.json", "p1.json", "--json", "merged.json"])
    assert result.exit_code == 1, result.output
    assert [v["passed"] for v in json.loads(Path("merged.json").read_text())["gate"]] == [True, False]
    result = runner.invoke(app, ["gate", "whole.json", "--policy", "policy.toml"])
    assert result.exit_code == 1, result.output


# --------------------------------------------------------------------------- stumble 7: ONNX external data


@pytest.fixture
def onnx_with_external_data(tmp_path: Path, make_cnn: Callable[..., SmallCNN]) -> Path:
    import onnx

    network = make_cnn(in_channels=1, num_classes=2, width=4, seed=3)
    single = tmp_path / "single.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter: fast, and enough here
        torch.onnx.export(
            network,
            (torch.zeros(2, 1, 28, 28),),
            str(single),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    folder = tmp_path / "exported"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(
        onnx.load(str(single)),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    single.unlink()
    assert (folder / "model.onnx.data").is_file()
    return path


def test_onnx_with_its_data_file_loads(
    onnx_with_external_data: Path, make_cnn: Callable[..., SmallCNN]
) -> None:
    model = load_model(onnx_with_external_data, LoadOptions(device="cpu"))
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    expected = make_cnn(in_channels=1, num_classes=2, width=4, seed=3)(x)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), expected, atol=1e-4, rtol=1e-4)
    assert any("model.onnx.data" in note for note in model.info.notes)


def test_onnx_without_its_data_file_is_one_line(runner: CliRunner, onnx_with_external_data: Path) -> None:
    data = onnx_with_external_data.with_name("model.onnx.data")
    data.unlink()
    assert_one_line_error(
        runner.invoke(app, ["info", str(onnx_with_external_data)]),
        "external data file model.onnx.data, which is missing",
        "must sit beside the .onnx file",
        str(data),
    )
    with pytest.raises(ModelLoadError, match=r"model\.onnx\.data"):
        load_model(onnx_with_external_data, LoadOptions(device="cpu"))
