"""``medaudit run --parts N --ray local``: the shards as Ray tasks on a local instance, merged to
exactly the single-process report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from typer.testing import CliRunner

from medaudit.cli import app

SAMPLE = Path(__file__).resolve().parents[1] / "sample_models" / "pneumoniamnist_rescnn.pt"
VOLATILE = {"wall_time_s", "created"}


def audit_file(folder: Path, data_root: Path) -> Path:
    path = folder / "audit.toml"
    path.write_text(
        f'[model]\npath = "{SAMPLE}"\n[data]\ndata_root = "{data_root}"\nlimit = 96\nseed = 3\n'
        '[run]\nbatch_size = 16\n[eval]\n[attack]\neps = "1/255"\nattack = "pgd"\nsteps = 3\n'
        '[shift]\ncorruptions = ["gaussian_noise"]\nseverities = [2]\n'
        '[gate]\n"eval.accuracy" = ">= 0.99"\n'
    )
    return path


@pytest.mark.slow
def test_ray_parts_merge_to_the_single_process_report(tmp_path: Path, real_data_root: Path) -> None:
    path = audit_file(tmp_path, real_data_root)
    runner = CliRunner()
    single = runner.invoke(app, ["run", str(path), "--json", str(tmp_path / "single.json")])
    assert single.exit_code == 1, single.output  # the accuracy rule fails on purpose
    args = ["run", str(path), "--parts", "3", "--ray", "local", "--json", str(tmp_path / "ray.json")]
    args += ["--junit", str(tmp_path / "junit.xml")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # the same verdict, from the merged report
    whole = json.loads((tmp_path / "single.json").read_text())
    merged = json.loads((tmp_path / "ray.json").read_text())
    assert set(merged) == set(whole)
    for key in set(whole) - VOLATILE:
        assert merged[key] == whole[key], key
    assert "Ray: parts of audit.toml done: 3/3 (100%)" in result.stderr
    assert 'failures="1"' in (tmp_path / "junit.xml").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--parts", "2"], "--parts N and --ray ADDRESS go together"),
        (["--ray", "local"], "--parts N and --ray ADDRESS go together"),
        (["--parts", "2", "--ray", "local", "--shard", "0/2"], "cannot be combined with --shard"),
    ],
)
def test_bad_part_options_fail_before_any_work(tmp_path: Path, extra: list[str], message: str) -> None:
    path = audit_file(tmp_path, tmp_path)
    result = CliRunner().invoke(app, ["run", str(path), *extra])
    assert_one_line_error(result, message)


@pytest.mark.slow
def test_a_part_that_fails_gives_its_own_error(tmp_path: Path, real_data_root: Path) -> None:
    """A user error found inside a worker (here: RGB data for a grey-scale model) is the same one
    line and exit code as in one process, in the audit file's words, not an internal error."""
    path = audit_file(tmp_path, real_data_root)
    path.write_text(path.read_text().replace("limit = 96", 'dataset = "retinamnist"\nlimit = 96'))
    result = CliRunner().invoke(app, ["run", str(path), "--parts", "2", "--ray", "local"])
    assert_one_line_error(result, "3 channels", "[model] channels")


def test_parts_refuse_what_needs_every_image_before_starting_ray(tmp_path: Path) -> None:
    path = audit_file(tmp_path, tmp_path)
    path.write_text(path.read_text() + "[confounders]\ndiscover = true\n")
    result = CliRunner().invoke(app, ["run", str(path), "--parts", "2", "--ray", "local"])
    assert_one_line_error(result, "[confounders] discover", "without --shard")
