"""``--shard i/n`` and ``medaudit merge``: the parts merge to exactly the single-process report."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medaudit.attacks import run_attacks
from medaudit.attacks.checks import AuditedSweep, run_checks
from medaudit.attacks.margin import MarginConfig, minimal_perturbation
from medaudit.attacks.sweep import AttackConfig
from medaudit.cli import app
from medaudit.confounders.config import ProbeConfig
from medaudit.confounders.probe import run_probe
from medaudit.errors import ConfigError
from medaudit.models import bind_model
from medaudit.models.wrapper import AuditModel, InputSpec, ModelInfo
from medaudit.sharding import RANDOM_BLOCK, Shard, concat, decode, encode
from medaudit.shift.benchmark import ShiftConfig, run_shift

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn.onnx"
VOLATILE = {"wall_time_s"}


@pytest.mark.parametrize(
    ("text", "message"), [("3/2", "0 <= i < n"), ("1", "i/n"), ("a/b", "i/n"), ("0/0", "0 <= i < n")]
)
def test_bad_shard_specs_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Shard.parse(text)


@pytest.mark.parametrize(("n", "block", "count"), [(100, 7, 3), (64, 32, 2), (10, 1, 10), (1000, 256, 4)])
def test_shards_tile_the_images_on_block_boundaries(n: int, block: int, count: int) -> None:
    bounds = [Shard(i, count).bounds(n, block) for i in range(count)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert all(start % block == 0 and start < stop for start, stop in bounds)


def test_shards_are_cut_on_random_blocks_whatever_the_batch_size() -> None:
    assert [Shard(i, 2).bounds(624) for i in range(2)] == [(0, 320), (320, 624)]
    assert RANDOM_BLOCK == 32


def test_more_shards_than_blocks_is_refused() -> None:
    with pytest.raises(ConfigError, match="only 2 blocks"):
        Shard(2, 3).bounds(64)


def wrapped(make_cnn) -> AuditModel:
    spec = InputSpec(channels=1, input_size=28, mean=(0.5,), std=(0.5,))
    return AuditModel(make_cnn(width=4), spec, ModelInfo(path="", format="test", sha256="", parameters=None))


def parts(data, count: int):
    for i in range(count):
        start, stop = Shard(i, count).bounds(data.n)
        yield data.shard(start, stop, {"index": i})


def through_json(value):
    """What a shard's JSON gives back to merge."""
    return decode(json.loads(json.dumps(encode(value))))


class Brightness(torch.nn.Module):
    """Class 1 for bright images: samples near mid-grey break at a small eps, others never."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([-10 * mean, 10 * mean], dim=1)


def brightness_data(audit_data):
    data = audit_data(n=100, seed=3)  # 4 blocks of RANDOM_BLOCK: 3 shards of 32, 32, 36
    labels = (data.images.float().mean(dim=(1, 2, 3)) > 127.5).long()
    labels[:3] = 1 - labels[:3]  # a few clean-wrong samples
    return replace(data, labels=labels)


def brightness_model(data) -> AuditModel:
    spec = InputSpec(channels=1, input_size=28, mean=(0.5,), std=(0.5,))
    model = AuditModel(Brightness(), spec, ModelInfo(path="", format="test", sha256="", parameters=None))
    bind_model(model, data)
    return model


def test_sharded_sweep_and_checks_equal_the_single_run(audit_data) -> None:
    data = brightness_data(audit_data)
    model = brightness_model(data)
    config = AttackConfig(
        attacks=("pgd", "square"), eps=(0.02, 0.1), params={"square": {"queries": 30}}, batch_size=8
    )

    def audited(d):
        result = run_attacks(model, d, config)
        return AuditedSweep(result, run_checks(model, d, result), ("plan note",))

    whole = audited(data)
    merged = concat([through_json(audited(part)) for part in parts(data, 3)])
    assert merged.to_dict() == whole.to_dict()
    assert merged.warnings() == whole.warnings()
    # the bookkeeping is exercised: some samples broken, some robust, checks drew samples
    worst = whole.to_dict()["sweep"][-1]
    assert 0 < worst["robust_accuracy"] < worst["clean_accuracy"]
    assert (whole.checks.unbounded != -1).any()


def test_sharded_margins_equal_the_single_run(audit_data) -> None:
    data = brightness_data(audit_data)
    model = brightness_model(data)
    config = MarginConfig(attack="pgd-cw", norm="linf", eps_max=0.1, tolerance=0.005, steps=5, batch_size=8)
    whole = minimal_perturbation(model, data, config)
    merged = concat([through_json(minimal_perturbation(model, part, config)) for part in parts(data, 3)])
    assert merged.to_dict() == whole.to_dict()
    assert np.isfinite(whole.margins).any()


def test_sharded_shift_and_probe_equal_the_single_run(make_cnn, audit_data) -> None:
    data = audit_data(n=64, seed=4)  # 2 blocks of RANDOM_BLOCK
    model = wrapped(make_cnn)
    bind_model(model, data)
    shift = ShiftConfig(
        corruptions=("gaussian_noise", "motion_blur"), source="pneumoniamnist", mode="scaled", batch_size=8
    )
    probe = ProbeConfig(
        artifacts=("tag", "dose_noise"), strengths=(1.0,), positions=("top-left",), batch_size=8
    )
    for run, config in ((run_shift, shift), (run_probe, probe)):
        whole = run(model, data, config).to_dict()
        pieces = [through_json(run(model, part, config)) for part in parts(data, 2)]
        assert concat(pieces).to_dict() == whole


def test_codec_keeps_arrays_bit_for_bit() -> None:
    values = {
        ("tag", 0.5, None): torch.tensor([[1.0, float("nan")], [-0.0, 3e-38]]),
        "mask": np.array([True, False]),
        "nan": float("nan"),
    }
    back = through_json(values)
    assert torch.equal(
        back[("tag", 0.5, None)].view(torch.int32), values[("tag", 0.5, None)].view(torch.int32)
    )
    assert back["mask"].dtype == bool and back["mask"].tolist() == [True, False]
    assert np.isnan(back["nan"])


def test_decode_rebuilds_only_medaudit_types() -> None:
    with pytest.raises(ConfigError, match="not a medaudit type"):
        decode({"__dataclass__": "subprocess:Popen", "fields": {"args": "true"}})


def report(runner: CliRunner, args: list[str], path: Path) -> dict:
    result = runner.invoke(app, [*args, "--json", str(path)])
    assert result.exit_code in (0, 1), result.stderr
    return json.loads(path.read_text())


def same_report(merged: dict, whole: dict) -> None:
    assert set(merged) == set(whole)
    for key in whole:
        if key not in VOLATILE:
            assert merged[key] == whole[key], key


@pytest.mark.slow
def test_merged_run_equals_the_single_process_run(
    runner: CliRunner, tmp_path: Path, real_data_root: Path
) -> None:
    audit = tmp_path / "audit.toml"
    audit.write_text(
        f'[model]\npath = "{SAMPLE}"\n[data]\ndata_root = "{real_data_root}"\nlimit = 96\nseed = 1\n'
        '[run]\nbatch_size = 16\n[eval]\n[attack]\neps = "1/255,2/255"\nattack = "pgd,square"\nqueries = 20\n'
        '[shift]\ncorruptions = ["gaussian_noise", "zoom_blur"]\nseverities = [3]\n'
        '[confounders]\nartifacts = ["patch", "dose_noise"]\nstrengths = [1.0]\npositions = ["centre"]\n'
        '[gate]\n"eval.accuracy" = ">= 0.99"\n"attack.robust_accuracy@1/255" = ">= 0.1"\n'
    )
    whole = report(runner, ["run", str(audit)], tmp_path / "whole.json")
    names = []
    for i in (2, 0, 1):  # any order
        names.append(str(tmp_path / f"part{i}.json"))
        part = report(runner, ["run", str(audit), "--shard", f"{i}/3"], Path(names[-1]))
        assert part["gate"] is None and part["data"]["shard"]["count"] == 3
    result = runner.invoke(app, ["merge", *names, "--json", str(tmp_path / "merged.json")])
    merged = json.loads((tmp_path / "merged.json").read_text())
    same_report(merged, whole)
    assert [v["passed"] for v in merged["gate"]] == [False, True]  # the accuracy rule fails on purpose
    assert result.exit_code == 1
    merged_stdout = runner.invoke(app, ["merge", *names])
    assert json.loads(merged_stdout.stdout)["results"] == whole["results"]


def test_merged_attack_command_equals_the_single_run(
    runner: CliRunner, tmp_path: Path, real_data_root: Path
) -> None:
    args = ["attack", str(SAMPLE), "--data-root", str(real_data_root), "--limit", "40", "--batch-size", "16"]
    args += ["--eps", "2/255", "--attack", "apgd-ce", "--steps", "5"]
    whole = report(runner, args, tmp_path / "whole.json")
    names = [str(tmp_path / f"p{i}.json") for i in range(2)]
    for i, name in enumerate(names):
        report(runner, [*args, "--shard", f"{i}/2"], Path(name))
    result = runner.invoke(app, ["merge", *names, "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.stderr
    same_report(json.loads((tmp_path / "m.json").read_text()), whole)


def test_merge_refuses_incomplete_or_foreign_parts(
    runner: CliRunner, tmp_path: Path, real_data_root: Path
) -> None:
    args = ["eval", str(SAMPLE), "--data-root", str(real_data_root), "--limit", "96", "--batch-size", "16"]
    for i in range(3):
        report(runner, [*args, "--shard", f"{i}/3"], tmp_path / f"p{i}.json")
    report(runner, [*args, "--seed", "5", "--shard", "2/3"], tmp_path / "other.json")
    report(runner, args, tmp_path / "whole.json")
    p = [str(tmp_path / f"p{i}.json") for i in range(3)]
    cases = {
        "missing 1/3": [p[0], p[2]],
        "given twice 2/3": [*p, p[2]],
        "parts of different audits": [p[0], p[1], str(tmp_path / "other.json")],
        "is not a shard": [str(tmp_path / "whole.json")],
    }
    for message, files in cases.items():
        target = tmp_path / "merged.json"
        result = runner.invoke(app, ["merge", *files, "--json", str(target)])
        assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr
        assert not target.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shard", "4/4"], "0 <= i < n"),
        (["--shard", "0/9"], "only 2 blocks"),
        (["--shard", "0/2", "--save-grid", "g.png"], "--save-grid cannot be combined with --shard"),
    ],
)
def test_bad_shard_options_exit_2(
    runner: CliRunner, tmp_path: Path, real_data_root: Path, extra: list[str], message: str
) -> None:
    args = ["shift", str(SAMPLE), "--data-root", str(real_data_root), "--limit", "48", "--batch-size", "16"]
    result = runner.invoke(app, [*args, *[str(tmp_path / e) if e.endswith(".png") else e for e in extra]])
    assert result.exit_code == 2 and message in result.stderr


def test_run_refuses_to_shard_intrinsic(runner: CliRunner, tmp_path: Path, real_data_root: Path) -> None:
    audit = tmp_path / "audit.toml"
    audit.write_text(f'[model]\npath = "{SAMPLE}"\n[data]\ndata_root = "{real_data_root}"\n[intrinsic]\n')
    result = runner.invoke(app, ["run", str(audit), "--shard", "0/2"])
    assert result.exit_code == 2 and "all pairs" in result.stderr
