"""Hostile and clumsy inputs across every command (issue #15).

Each case builds a malformed or malicious input (model, card, data, audit file,
policy, merge part, output target, option) in a fresh folder next to a small
valid workspace, runs the CLI, and asserts: the documented exit code, one
``error:`` line, no traceback, no code run from the input (marker files absent)
and no existing file changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, assert_one_line_error, random_images, seeded_cnn
from PIL import Image
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.errors import INTERNAL_ERROR, INTERRUPTED, MODEL_ERROR, USER_ERROR

N_IMAGES = 64  # two blocks of 32: the merge parts need a shard each


class WritesMarker:
    """Unpickling this calls ``open(marker, 'w')``: proof that code from a file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


class RaisesWithGradients(torch.nn.Module):
    """Fine for inference (binding, eval), raises as soon as an attack asks for gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.net = seeded_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            raise RuntimeError("this model refuses gradients")
        return self.net(x)


class ReturnsTuple(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = seeded_cnn()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        return out, out.softmax(1)


class ReturnsLabels(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = seeded_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).argmax(1, keepdim=True)


def save_scripted(path: Path, module: torch.nn.Module) -> Path:
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


@dataclass
class Workspace:
    root: Path
    model: Path
    card: Path
    data: Path
    audit: Path
    policy: Path
    parts: list[Path]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A valid model, card, data, audit file, policy and two merge parts; cases must leave them as they are."""
    root = tmp_path_factory.mktemp("hostile")
    model = root / "model.pt"
    torch.jit.save(torch.jit.trace(seeded_cnn().eval(), torch.zeros(2, 1, 28, 28)), str(model))
    card = root / "model.json"
    card.write_text(json.dumps({"class_names": ["benign", "malignant"], "outputs": "logits"}))
    labels = (np.arange(N_IMAGES) % 2).reshape(-1, 1)
    data = root / "data.npz"
    np.savez(data, test_images=random_images(N_IMAGES)[:, 0].numpy(), test_labels=labels)
    audit = root / "audit.toml"
    audit.write_text('[model]\npath = "model.pt"\n[data]\ndata = "data.npz"\n[eval]\n')
    policy = root / "policy.toml"
    policy.write_text('[gate]\n"eval.accuracy" = ">= 0.0"\n')
    runner = CliRunner()
    parts = []
    for index in range(2):
        part = root / f"part{index}.json"
        args = ["eval", str(model), "--data", str(data), "--batch-size", "8", "--shard", f"{index}/2"]
        result = runner.invoke(app, [*args, "--json", str(part)])
        assert result.exit_code == 0, result.output
        parts.append(part)
    return Workspace(root, model, card, data, audit, policy, parts)


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


Case = Callable[[Workspace, Path], tuple[list, int, tuple[str, ...]]]
"""(workspace, a fresh folder) -> (CLI arguments, exit code, needles of the message)."""
CASES: dict[str, Case] = {}


def case(build: Case) -> Case:
    CASES[build.__name__] = build
    return build


@case
def torch_pickle(ws: Workspace, tmp: Path):
    torch.save({"weights": WritesMarker(tmp / "MARKER")}, tmp / "evil.pt")
    return ["eval", tmp / "evil.pt", "--data", ws.data], USER_ERROR, ("pickled",)


@case
def card_arch_runs_code(ws: Workspace, tmp: Path):
    (tmp / "evil_arch.py").write_text(
        f"open({str(tmp / 'MARKER')!r}, 'w').close()\ndef factory(**kw):\n    raise SystemExit(9)\n"
    )
    torch.save(seeded_cnn().state_dict(), tmp / "weights.pt")
    (tmp / "weights.json").write_text(json.dumps({"arch": "evil_arch:factory"}))
    return ["eval", tmp / "weights.pt", "--data", ws.data], USER_ERROR, ("evil_arch:factory", "--arch")


@case
def arch_relative_module(ws: Workspace, tmp: Path):
    torch.save(seeded_cnn().state_dict(), tmp / "weights.pt")
    return ["eval", tmp / "weights.pt", "--arch", ".evil:f", "--data", ws.data], USER_ERROR, (".evil",)


@case
def random_bytes_model(ws: Workspace, tmp: Path):
    (tmp / "model.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    return ["eval", tmp / "model.pt", "--data", ws.data], USER_ERROR, ("model.pt",)


@case
def truncated_model(ws: Workspace, tmp: Path):
    (tmp / "model.pt").write_bytes(ws.model.read_bytes()[:2000])
    return ["eval", tmp / "model.pt", "--data", ws.data], USER_ERROR, ("model.pt",)


@case
def random_onnx(ws: Workspace, tmp: Path):
    (tmp / "model.onnx").write_bytes(b"\x08\x07" + np.random.default_rng(1).bytes(2048))
    return ["info", tmp / "model.onnx"], USER_ERROR, ("model.onnx",)


@case
def card_not_json(ws: Workspace, tmp: Path):
    (tmp / "model.pt").write_bytes(ws.model.read_bytes())
    (tmp / "model.json").write_text("{'single': quotes")
    return ["eval", tmp / "model.pt", "--data", ws.data], USER_ERROR, ("model.json",)


@case
def card_a_list(ws: Workspace, tmp: Path):
    (tmp / "model.pt").write_bytes(ws.model.read_bytes())
    (tmp / "model.json").write_text("[1, 2]")
    return ["eval", tmp / "model.pt", "--data", ws.data], USER_ERROR, ("model.json",)


@case
def card_class_names_number(ws: Workspace, tmp: Path):
    (tmp / "model.pt").write_bytes(ws.model.read_bytes())
    (tmp / "model.json").write_text(json.dumps({"class_names": 5}))
    return ["eval", tmp / "model.pt", "--data", ws.data], USER_ERROR, ("class_names",)


@case
def too_many_outputs(ws: Workspace, tmp: Path):
    save_scripted(tmp / "model.pt", seeded_cnn(num_classes=5))
    (tmp / "model.json").write_text(json.dumps({"class_names": ["benign", "malignant"]}))
    return ["eval", tmp / "model.pt", "--data", ws.data], USER_ERROR, ("5", "2")


@case
def npz_object_array(ws: Workspace, tmp: Path):
    evil = np.empty(N_IMAGES, dtype=object)
    evil[:] = [WritesMarker(tmp / "MARKER")] * N_IMAGES
    np.savez(tmp / "evil.npz", test_images=evil, test_labels=np.zeros((N_IMAGES, 1), dtype=np.int64))
    return ["eval", ws.model, "--data", tmp / "evil.npz"], USER_ERROR, ("evil.npz",)


@case
def npz_nan_images(ws: Workspace, tmp: Path):
    images = np.full((N_IMAGES, 28, 28), np.nan, dtype=np.float32)
    np.savez(tmp / "nan.npz", test_images=images, test_labels=np.arange(N_IMAGES) % 2)
    return ["eval", ws.model, "--data", tmp / "nan.npz"], USER_ERROR, ("nan.npz",)


@case
def npz_not_a_zip(ws: Workspace, tmp: Path):
    (tmp / "data.npz").write_text("images,labels\n1,2\n")
    return ["eval", ws.model, "--data", tmp / "data.npz"], USER_ERROR, ("data.npz",)


@case
def decompression_bomb(ws: Workspace, tmp: Path):
    for label in ("a", "b"):
        (tmp / "images" / label).mkdir(parents=True)
        Image.new("L", (28, 28)).save(tmp / "images" / label / "ok.png")
    # a valid PNG header (CRC included) declaring 100000 x 100000 pixels, with no pixel data behind it
    png = bytearray((tmp / "images" / "a" / "ok.png").read_bytes())
    png[16:24] = (100_000).to_bytes(4, "big") * 2
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    (tmp / "images" / "a" / "bomb.png").write_bytes(bytes(png))
    return ["eval", ws.model, "--data", tmp / "images"], USER_ERROR, ("bomb.png",)


@case
def empty_png(ws: Workspace, tmp: Path):
    for label in ("a", "b"):
        (tmp / "images" / label).mkdir(parents=True)
        Image.new("L", (28, 28)).save(tmp / "images" / label / "ok.png")
    (tmp / "images" / "b" / "empty.png").write_bytes(b"")
    return ["eval", ws.model, "--data", tmp / "images"], USER_ERROR, ("empty.png",)


@case
def audit_bad_toml(ws: Workspace, tmp: Path):
    (tmp / "audit.toml").write_text("[model\npath = ")
    return ["run", tmp / "audit.toml"], USER_ERROR, ("TOML",)


@case
def audit_negative_seed(ws: Workspace, tmp: Path):
    (tmp / "audit.toml").write_text(
        f'[model]\npath = "{ws.model}"\n[data]\ndata = "{ws.data}"\nseed = -1\n[eval]\n'
    )
    return ["run", tmp / "audit.toml"], USER_ERROR, ("seed",)


@case
def audit_unknown_attack(ws: Workspace, tmp: Path):
    text = f'[model]\npath = "{ws.model}"\n[data]\ndata = "{ws.data}"\n[attack]\nattack = "pgdd"\n'
    (tmp / "audit.toml").write_text(text)
    return ["run", tmp / "audit.toml"], USER_ERROR, ("pgdd",)


@case
def audit_wrong_type(ws: Workspace, tmp: Path):
    (tmp / "audit.toml").write_text(f'[model]\npath = "{ws.model}"\n[run]\nbatch_size = "big"\n[eval]\n')
    return ["run", tmp / "audit.toml"], USER_ERROR, ("batch_size",)


@case
def policy_unknown_metric(ws: Workspace, tmp: Path):
    (tmp / "policy.toml").write_text('[gate]\n"eval.acuracy" = ">= 0.5"\n')
    return ["gate", ws.parts[0], "--policy", tmp / "policy.toml"], USER_ERROR, ("eval.acuracy",)


@case
def policy_bad_rule(ws: Workspace, tmp: Path):
    (tmp / "policy.toml").write_text('[gate]\n"eval.accuracy" = "about 0.5"\n')
    return ["gate", ws.parts[0], "--policy", tmp / "policy.toml"], USER_ERROR, ("eval.accuracy",)


@case
def merge_tampered_labels(ws: Workspace, tmp: Path):
    doc = json.loads(ws.parts[1].read_text())
    (tmp / "part1.json").write_text(json.dumps(_flip_first_array(doc)))
    return ["merge", ws.parts[0], tmp / "part1.json"], USER_ERROR, ("part1.json",)


@case
def merge_index_a_string(ws: Workspace, tmp: Path):
    doc = json.loads(ws.parts[1].read_text())
    doc["shard"]["index"] = "one"
    (tmp / "part1.json").write_text(json.dumps(doc))
    return ["merge", ws.parts[0], tmp / "part1.json"], USER_ERROR, ("part1.json",)


@case
def merge_state_garbage(ws: Workspace, tmp: Path):
    doc = json.loads(ws.parts[1].read_text())
    doc["shard"]["state"] = {"__tensor__": {"dtype": "<f4", "shape": [3], "base64": "!!"}}
    (tmp / "part1.json").write_text(json.dumps(doc))
    return ["merge", ws.parts[0], tmp / "part1.json"], USER_ERROR, ("part1.json",)


@case
def json_onto_card(ws: Workspace, tmp: Path):
    return ["eval", ws.model, "--data", ws.data, "--json", ws.card], USER_ERROR, ("overwrite",)


@case
def json_onto_data(ws: Workspace, tmp: Path):
    return ["eval", ws.model, "--data", ws.data, "--json", ws.data], USER_ERROR, ("overwrite",)


@case
def json_onto_hard_link_of_data(ws: Workspace, tmp: Path):
    os.link(ws.data, tmp / "link.npz")
    return ["eval", ws.model, "--data", ws.data, "--json", tmp / "link.npz"], USER_ERROR, ("overwrite",)


@case
def json_onto_audit_file(ws: Workspace, tmp: Path):
    return ["run", ws.audit, "--json", ws.audit], USER_ERROR, ("overwrite",)


@case
def markdown_onto_policy(ws: Workspace, tmp: Path):
    return ["gate", ws.parts[0], "--policy", ws.policy, "--markdown", ws.policy], USER_ERROR, ("overwrite",)


@case
def json_onto_merge_part(ws: Workspace, tmp: Path):
    return ["merge", *ws.parts, "--json", ws.parts[0]], USER_ERROR, ("overwrite",)


@case
def html_into_image_folder(ws: Workspace, tmp: Path):
    for label in ("a", "b"):
        (tmp / "images" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (28, 28), color=40 * i).save(tmp / "images" / label / f"{i}.png")
    target = tmp / "images" / "a" / "report.json"
    return ["eval", ws.model, "--data", tmp / "images", "--json", target], USER_ERROR, ("data folder",)


@case
def init_onto_full_device(ws: Workspace, tmp: Path):
    return ["init", "/dev/full", "--force"], USER_ERROR, ("/dev/full",)


@case
def bad_option_before_a_pickle(ws: Workspace, tmp: Path):
    """Options are checked before the model is loaded: the trusted pickle never runs."""
    torch.save({"weights": WritesMarker(tmp / "MARKER")}, tmp / "evil.pt")
    args = ["attack", tmp / "evil.pt", "--trust-checkpoint", "--data", ws.data, "--eps", "abc"]
    return args, USER_ERROR, ("--eps",)


@case
def unknown_attack_before_a_pickle(ws: Workspace, tmp: Path):
    torch.save({"weights": WritesMarker(tmp / "MARKER")}, tmp / "evil.pt")
    args = ["attack", tmp / "evil.pt", "--trust-checkpoint", "--data", ws.data, "--attack", "pgdd"]
    return args, USER_ERROR, ("pgdd",)


@case
def negative_seed(ws: Workspace, tmp: Path):
    return ["eval", ws.model, "--data", ws.data, "--seed", "-1"], USER_ERROR, ("--seed",)


@case
def unknown_option(ws: Workspace, tmp: Path):
    return ["eval", ws.model, "--data", ws.data, "--jsn", "x.json"], USER_ERROR, ("--jsn",)


@case
def model_raises_under_attack(ws: Workspace, tmp: Path):
    save_scripted(tmp / "model.pt", RaisesWithGradients())
    args = ["attack", tmp / "model.pt", "--data", ws.data, "--attack", "pgd", "--steps", "2", "--eps", "0.01"]
    return args, MODEL_ERROR, ("model.pt", "refuses gradients")


@case
def model_returns_tuple(ws: Workspace, tmp: Path):
    save_scripted(tmp / "model.pt", ReturnsTuple())
    return ["eval", tmp / "model.pt", "--data", ws.data], MODEL_ERROR, ("model.pt", "tuple")


@case
def model_returns_labels(ws: Workspace, tmp: Path):
    save_scripted(tmp / "model.pt", ReturnsLabels())
    return ["eval", tmp / "model.pt", "--data", ws.data], MODEL_ERROR, ("model.pt", "int64")


def _flip_first_array(doc: dict) -> dict:
    """Negate the first float array in a part's state (e.g. its logits), keeping the JSON valid."""
    import base64

    def visit(node):
        if isinstance(node, dict):
            for key in ("__tensor__", "__ndarray__"):
                array = node.get(key)
                if isinstance(array, dict) and array["dtype"].endswith(("f4", "f8")):
                    values = np.frombuffer(base64.b64decode(array["base64"]), dtype=np.dtype(array["dtype"]))
                    array["base64"] = base64.b64encode((-values).tobytes()).decode("ascii")
                    return True
            return any(visit(value) for value in node.values())
        if isinstance(node, list):
            return any(visit(value) for value in node)
        return False

    assert visit(doc["shard"]["state"]), "no float array in the part's state"
    return doc


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_is_refused_cleanly(
    name: str, ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))  # a module shipped beside a model would be importable
    monkeypatch.chdir(tmp_path)
    args, code, needles = CASES[name](ws, tmp_path)
    before, before_tmp = snapshot(ws.root), snapshot(tmp_path)
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert_one_line_error(result, *needles, code=code)
    assert not (tmp_path / "MARKER").exists(), "code from the input ran"
    assert snapshot(ws.root) == before, "a workspace file changed"
    assert snapshot(tmp_path) == before_tmp, "a file was written or changed next to the input"
    sys.modules.pop("evil_arch", None)


def test_json_to_dev_null_keeps_the_device(ws: Workspace) -> None:
    result = CliRunner().invoke(app, ["eval", str(ws.model), "--data", str(ws.data), "--json", "/dev/null"])
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_json_to_a_fifo_is_written_in_place(ws: Workspace, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    result = CliRunner().invoke(app, ["eval", str(ws.model), "--data", str(ws.data), "--json", str(fifo)])
    out, _ = reader.communicate(timeout=60)
    assert result.exit_code == 0, result.output
    assert json.loads(out)["command"] == "eval" and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_json_through_a_symlink_replaces_the_target_not_the_link(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text("old")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    args = ["eval", str(ws.model), "--data", str(ws.data), "--json", str(tmp_path / "link.json")]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert (tmp_path / "link.json").is_symlink()
    assert json.loads((tmp_path / "real.json").read_text())["command"] == "eval"


def test_a_bug_is_exit_4_not_a_gate_verdict(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import medaudit.evaluate

    def broken(*args, **kwargs):
        raise ZeroDivisionError("planted bug")

    monkeypatch.setattr(medaudit.evaluate, "evaluate", broken)
    result = CliRunner().invoke(app, ["eval", str(ws.model), "--data", str(ws.data)])
    assert_one_line_error(result, "internal error", "ZeroDivisionError", "--debug", code=INTERNAL_ERROR)
    debug = CliRunner().invoke(app, ["--debug", "eval", str(ws.model), "--data", str(ws.data)])
    assert debug.exit_code == INTERNAL_ERROR and "Traceback" in debug.output


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_quickly_with_no_partial_output(ws: Workspace, tmp_path: Path, signum: int) -> None:
    """A long attack interrupted mid-way: exit 128+signal within seconds, no report, no temp file."""
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "medaudit.cli", "attack", str(ws.model), "--data", str(ws.data)]
    command += ["--attack", "pgd", "--steps", "100000", "--eps", "0.01", "--json", str(out / "report.json")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as an interactive shell leaves it
    )
    time.sleep(1.0)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        if _attacking(process.pid):
            break
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the process did not stop within 30 s of the signal")
    waited = time.monotonic() - sent
    assert process.returncode == (INTERRUPTED if signum == signal.SIGINT else 128 + signum), err.decode()
    assert waited < 30
    assert "interrupted" in err.decode() and "Traceback" not in err.decode()
    assert list(out.iterdir()) == []


def _attacking(pid: int) -> bool:
    """True once the process has used a few seconds of CPU (past the imports and the model load)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK") > 6.0


def test_hostile_pickles_are_real(tmp_path: Path) -> None:
    """The marker pickles do run code when unpickled unsafely: the cases above test something."""
    pickle.loads(pickle.dumps(WritesMarker(tmp_path / "MARKER")))
    assert (tmp_path / "MARKER").exists()
