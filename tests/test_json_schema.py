"""docs/schema/medaudit-1.schema.json: every command's real --json document validates, broken ones do not."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medaudit.cli import app

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "docs" / "schema" / "medaudit-1.schema.json"
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn.onnx"
MODEL = str(SAMPLE)
ORDINAL_MODEL = str(REPO / "sample_models" / "retinamnist_rescnn.onnx")

# name -> (CLI arguments before --json, accepted exit codes); every run is kept cheap (small --limit etc.)
COMMANDS: dict[str, tuple[list[str], tuple[int, ...]]] = {
    "eval": (["eval", MODEL, "--limit", "64", "--threshold", "0.7", "--bootstrap", "50"], (0,)),
    "eval-ordinal": (["eval", ORDINAL_MODEL, "--limit", "64", "--bootstrap", "0"], (0,)),
    "attack": (["attack", MODEL, "--limit", "32", "--attack", "fgsm", "--eps", "1/255"], (0,)),
    "attack-margin": (["attack", MODEL, "--margin", "--limit", "16", "--steps", "3"], (0,)),
    "shift": (
        ["shift", MODEL, "--limit", "32", "--corruptions", "gaussian_noise", "--severities", "1,5"],
        (0,),
    ),
    "intrinsic-data": (["intrinsic", "--dataset", "breastmnist", "--rounds", "2"], (0,)),
    "intrinsic-model": (["intrinsic", MODEL, "--limit", "200", "--rounds", "2", "--no-lipschitz"], (0,)),
    "info": (["info", MODEL], (0,)),
    "eval-shard": (["eval", MODEL, "--limit", "64", "--batch-size", "16", "--shard", "1/2"], (0,)),
    "confounders": (
        ["confounders", MODEL, "--limit", "32", "--artifacts", "tag,lowpass", "--strengths", "1"],
        (0,),
    ),
    "confounders-discover": (
        ["confounders", "discover", MODEL, "--limit", "48", "--steps", "2", "--fit-images", "16"],
        (0,),
    ),
}
EXPECTED_COMMAND = {
    "intrinsic-data": "intrinsic",
    "intrinsic-model": "intrinsic",
    "gate-failed": "gate",
    "eval-shard": "eval",
    "eval-ordinal": "eval",
    "confounders-discover": "confounders",
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Any:
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def documents(real_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One real --json document per command (and both intrinsic modes, a passing and a failing gate)."""
    out = tmp_path_factory.mktemp("schema_docs")
    runner = CliRunner()
    docs: dict[str, Any] = {}

    def invoke(name: str, args: list[str], codes: tuple[int, ...]) -> None:
        target = out / f"{name}.json"
        result = runner.invoke(app, [*args, "--json", str(target)])
        assert result.exit_code in codes, f"{name}: exit {result.exit_code}\n{result.output}"
        docs[name] = json.loads(target.read_text())

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDAUDIT_DATA_ROOT", str(real_data_root))
        for name, (args, codes) in COMMANDS.items():
            invoke(name, args, codes)
        audit = out / "audit.toml"
        audit.write_text(
            f'[model]\npath = "{SAMPLE}"\n[data]\ndata_root = "{real_data_root}"\nlimit = 32\nseed = 1\n'
            '[run]\nbatch_size = 32\n[eval]\n[attack]\neps = "1/255"\nattack = "fgsm"\n'
            '[shift]\ncorruptions = ["gaussian_noise"]\nseverities = [1, 5]\n'
            "[intrinsic]\nrounds = 2\nlipschitz = false\n"
            '[gate]\n"eval.accuracy" = ">= 0.1"\n"attack.robust_accuracy@1/255" = ">= 0"\n'
        )
        invoke("run", ["run", str(audit)], (0,))
        report = str(out / "run.json")
        passing, failing = out / "pass.toml", out / "fail.toml"
        passing.write_text('[gate]\n"eval.auc" = ">= 0.5"\n"shift.mean_be" = "<= 0.9"\n')
        failing.write_text('[gate]\n"eval.accuracy" = "> 1"\n"intrinsic.d_repr_mle" = { max = 0 }\n')
        invoke("gate", ["gate", report, "--policy", str(passing)], (0,))
        invoke("gate-failed", ["gate", report, "--policy", str(failing)], (1,))
        invoke("compare", ["compare", report, report, "--allow", "intrinsic.k_f=0.1"], (0,))
    yield docs


def test_schema_is_valid_draft_2020_12(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]
    assert schema["properties"]["schema"]["const"] == "medaudit/1"


@pytest.mark.parametrize("name", [*COMMANDS, "run", "gate", "gate-failed", "compare"])
def test_real_documents_validate(name: str, documents: dict[str, Any], validator: Any) -> None:
    doc = documents[name]
    assert doc["command"] == EXPECTED_COMMAND.get(name, name)
    validator.validate(doc)


def test_documents_cover_the_optional_shapes(documents: dict[str, Any]) -> None:
    """The documents exercise the branches of the schema (null model, d_repr, gate verdicts, failures)."""
    assert documents["intrinsic-data"]["model"] is None
    assert documents["intrinsic-data"]["results"]["d_repr"] is None
    assert isinstance(documents["intrinsic-model"]["results"]["d_repr"], dict)
    assert documents["info"]["data"] is None and documents["info"]["seed"] is None
    assert set(documents["run"]["results"]) == {"eval", "attack", "shift", "intrinsic"}
    assert len(documents["run"]["gate"]) == 2
    assert documents["gate"]["results"]["passed"] is True
    assert documents["gate-failed"]["results"]["failed"] == 2
    assert any(row["passed"] is None for row in documents["compare"]["results"]["rows"])
    assert documents["eval-shard"]["shard"]["start"] == 32 and "shard" not in documents["eval"]
    binary, ordinal = documents["eval"]["results"], documents["eval-ordinal"]["results"]
    assert binary["threshold"] == 0.7 and binary["sensitivity"] is not None and binary["kappa"] is None
    assert binary["bootstrap"]["rounds"] == 50 and isinstance(binary["auc_ci"], list)
    assert ordinal["threshold"] is None and ordinal["kappa"] is not None and ordinal["mae"] is not None
    assert ordinal["auc_ci"] is None and ordinal["bootstrap"]["rounds"] == 0


def test_a_shard_without_its_state_is_rejected(documents: dict[str, Any], validator: Any) -> None:
    assert any("state" in e for e in _errors(validator, _edit(documents["eval-shard"], ("shard", "state"))))


def _errors(validator: Any, doc: dict[str, Any]) -> list[str]:
    """Every error, with those inside anyOf branches (a nullable object reports them as context)."""
    out, stack = [], list(validator.iter_errors(doc))
    while stack:
        error = stack.pop()
        out.append(f"{error.json_path}: {error.message}")
        stack.extend(error.context or [])
    return out


_DELETE = object()


def _edit(doc: dict[str, Any], path: tuple[str | int, ...], value: Any = _DELETE) -> dict[str, Any]:
    """A deep copy with the item at ``path`` deleted (no value) or replaced."""
    broken = copy.deepcopy(doc)
    parent = broken
    for key in path[:-1]:
        parent = parent[key]
    if value is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return broken


def test_wrong_schema_string_is_rejected(documents: dict[str, Any], validator: Any) -> None:
    for wrong in ("medaudit/2", "medaudit", None):
        errors = _errors(validator, _edit(documents["eval"], ("schema",), wrong))
        assert any(e.startswith("$.schema:") for e in errors), errors


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("eval", ("results",)),
        ("eval", ("versions",)),
        ("eval", ("results", "auc")),
        ("eval", ("results", "confusion_matrix")),
        ("eval", ("results", "ece")),
        ("eval", ("results", "auc_ci")),
        ("eval", ("results", "sensitivity")),
        ("eval", ("results", "reliability", "count")),
        ("eval", ("results", "bootstrap", "seed")),
        ("eval-ordinal", ("results", "kappa")),
        ("attack", ("results", "checks")),
        ("attack", ("results", "sweep", -1, "perturbation")),  # the worst-case record
        ("attack-margin", ("results", "n_censored")),
        ("shift", ("results", "summary", "mean_be")),
        ("shift", ("results", "per_corruption", 0, "rbe")),
        ("intrinsic-data", ("results", "label_sharpness", "k_f")),
        ("intrinsic-model", ("results", "d_repr_le_d_data")),
        ("intrinsic-model", ("results", "d_repr", "layer")),
        ("info", ("results", "sha256")),
        ("run", ("gate",)),
        ("run", ("results", "attack", "curve")),
        ("gate", ("results", "verdicts")),
        ("compare", ("results", "rows", 0, "direction")),
    ],
)
def test_missing_documented_key_is_rejected(
    name: str, path: tuple[str | int, ...], documents: dict[str, Any], validator: Any
) -> None:
    key = path[-1]
    errors = _errors(validator, _edit(documents[name], path))
    assert any(f"'{key}' is a required property" in e for e in errors), errors


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("eval", ("results", "accuracy")),
        ("eval", ("wall_time_s",)),
        ("eval", ("results", "ece")),
        ("eval", ("results", "specificity")),
        ("eval", ("results", "accuracy_ci", 0)),
        ("eval", ("results", "reliability", "accuracy", -1)),
        ("eval-ordinal", ("results", "mae")),
        ("attack", ("results", "sweep", 0, "robust_accuracy")),
        ("attack-margin", ("results", "margins", 0)),
        ("shift", ("results", "summary", "mean_be")),
        ("intrinsic-model", ("results", "d_data", "mle")),
        ("run", ("gate", 0, "threshold")),
        ("run", ("results", "eval", "auc")),
        ("compare", ("results", "rows", 0, "baseline")),
    ],
)
def test_string_for_a_number_is_rejected(
    name: str, path: tuple[str | int, ...], documents: dict[str, Any], validator: Any
) -> None:
    errors = _errors(validator, _edit(documents[name], path, "0.5"))
    assert any("'0.5' is not of type" in e for e in errors), errors


def test_results_are_checked_against_their_command(documents: dict[str, Any], validator: Any) -> None:
    """An attack document relabelled as eval fails: results are dispatched on `command`."""
    assert _errors(validator, _edit(documents["attack"], ("command",), "eval"))
    assert _errors(validator, _edit(documents["eval"], ("command",), "audit"))  # unknown command
    assert _errors(validator, _edit(documents["run"], ("results",), {}))  # a run with no audit
    assert _errors(validator, _edit(documents["eval"], ("results", "accuracy"), 1.5))  # outside [0, 1]


def test_null_floats_and_extra_fields_are_accepted(documents: dict[str, Any], validator: Any) -> None:
    """NaN is written as null; new fields must not break the schema."""
    doc = _edit(documents["eval"], ("results", "auc"), None)
    doc["results"]["new_metric"] = 1.0
    doc["new_top_level_key"] = {"anything": True}
    validator.validate(doc)
    validator.validate(_edit(documents["shift"], ("results", "summary", "mean_auc_drop"), None))
    validator.validate(_edit(documents["attack"], ("results", "sweep", -1, "auc_under_attack"), None))


def test_versions_name_medaudit_when_run_from_a_source_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``pip install`` (PYTHONPATH=checkout) there is no package metadata; the schema still needs it."""
    from importlib import metadata

    import medaudit
    from medaudit import document

    real = metadata.version

    def version(package: str) -> str:
        if package == "medaudit":
            raise metadata.PackageNotFoundError(package)
        return real(package)

    monkeypatch.setattr(document.metadata, "version", version)
    assert document.versions()["medaudit"] == medaudit.__version__
