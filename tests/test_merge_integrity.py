"""``medaudit merge`` trusts no part: edited, damaged or foreign parts give one line and exit 2.

One set of real ``run --shard i/3`` parts (eval, attack and a gate, on tiny synthetic data) is
written once; every test edits copies of it. A part edited after it was written fails its
``shard.digest``; a part whose digest was recomputed after the edit (what a forger would do)
must still never reach a traceback.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medaudit import sharding
from medaudit.cli import app
from medaudit.sharding import decode, digests, encode

COUNT = 3
Doc = dict[str, Any]
Edit = Callable[[Doc], None]


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory, make_cnn) -> list[Doc]:
    """The parts' documents, as written by ``medaudit run --shard i/3``."""
    folder = tmp_path_factory.mktemp("parts")
    rng = np.random.default_rng(0)
    np.savez(
        folder / "data.npz",
        test_images=rng.integers(0, 256, (96, 28, 28), dtype=np.uint8),  # 3 blocks of RANDOM_BLOCK
        test_labels=(np.arange(96) % 2).reshape(-1, 1),
    )
    model = folder / "model.pt"
    torch.jit.save(torch.jit.trace(make_cnn(), torch.zeros(2, 1, 28, 28)), str(model))
    audit = folder / "audit.toml"
    audit.write_text(
        f'[model]\npath = "{model}"\n[data]\ndata = "{folder / "data.npz"}"\n[run]\nbatch_size = 8\n'
        '[eval]\n[attack]\neps = "2/255"\nattack = "pgd"\nsteps = 2\n[gate]\n"eval.accuracy" = ">= 0.99"\n'
    )
    docs = []
    for i in range(COUNT):
        path = folder / f"part{i}.json"
        result = CliRunner().invoke(app, ["run", str(audit), "--shard", f"{i}/{COUNT}", "--json", str(path)])
        assert result.exit_code == 0, result.output
        docs.append(json.loads(path.read_text()))
    return docs


@pytest.fixture
def parts(original: list[Doc]) -> list[Doc]:
    return copy.deepcopy(original)


def merge(tmp_path: Path, docs: list[Doc | str | bytes | Path]) -> tuple[Any, list[str], Path]:
    """Run ``medaudit merge`` on the parts (a document, raw file text/bytes, or a path as is)."""
    names = []
    for i, doc in enumerate(docs):
        path = tmp_path / f"part{i}.json"
        if isinstance(doc, Path):
            path = doc
        elif isinstance(doc, bytes):
            path.write_bytes(doc)
        else:
            path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        names.append(str(path))
    target = tmp_path / "merged.json"
    return CliRunner().invoke(app, ["merge", *names, "--json", str(target)]), names, target


def refused(outcome: tuple[Any, list[str], Path], *needles: str) -> str:
    """Exit 2, one line on stderr naming the problem, no traceback, no output file."""
    result, _, target = outcome
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not target.exists()
    return lines[0]


def state(doc: Doc) -> Any:
    return decode(doc["shard"]["state"])


def put_state(doc: Doc, value: Any) -> None:
    doc["shard"]["state"] = encode(value)


def reseal(doc: Doc) -> None:
    """What a forger would do after an edit: recompute the part's digest."""
    doc["shard"]["digest"] = digests(doc)


# ---- (a) edited per-sample results ----


def flip_logits(doc: Doc) -> None:
    value = state(doc)
    value["sections"]["eval"].logits[0] = -value["sections"]["eval"].logits[0]
    put_state(doc, value)


def flip_labels(doc: Doc) -> None:
    value = state(doc)
    result = value["sections"]["eval"]
    result.labels.copy_(result.logits.argmax(dim=1))  # every answer right: accuracy 1.0
    put_state(doc, value)


def test_the_untouched_parts_merge(tmp_path: Path, parts: list[Doc]) -> None:
    result, _, target = merge(tmp_path, parts)
    assert result.exit_code == 1, result.output  # the accuracy rule fails on purpose
    assert json.loads(target.read_text())["gate"][0]["passed"] is False


@pytest.mark.parametrize("edit", [flip_logits, flip_labels], ids=["logits", "labels"])
def test_edited_results_inside_the_state_are_refused(tmp_path: Path, parts: list[Doc], edit: Edit) -> None:
    edit(parts[1])
    outcome = merge(tmp_path, parts)
    refused(outcome, outcome[1][1], "was changed after it was written", "state digest")


def test_edited_labels_would_turn_the_verdict(tmp_path: Path, parts: list[Doc]) -> None:
    """Why the digest matters: relabelled parts (digests recomputed) pass a gate the model fails."""
    for doc in parts:
        flip_labels(doc)
        reseal(doc)
    result, _, target = merge(tmp_path, parts)
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text())["results"]["eval"]["accuracy"] == 1.0


# ---- (b) edited audit fields ----


def set_field(*path: str | int, value: Any) -> Edit:
    def edit(doc: Doc) -> None:
        for key in path[:-1]:
            doc = doc[key]
        doc[path[-1]] = value

    edit.__name__ = ".".join(map(str, path))
    return edit


AUDIT_EDITS = [
    set_field("seed", value=5),
    set_field("config", "batch_size", value=16),
    set_field("config", "audits", "attack", "eps", value=[0.1]),
    set_field("model", "sha256", value="0" * 64),
    set_field("data", "sha256", value="0" * 64),
    set_field("command", value="eval"),
    set_field("shard", "total", value=97),
    set_field("shard", "start", value=9),
]


@pytest.mark.parametrize("edit", AUDIT_EDITS, ids=[e.__name__ for e in AUDIT_EDITS])
def test_edited_audit_fields_are_refused(tmp_path: Path, parts: list[Doc], edit: Edit) -> None:
    edit(parts[2])
    outcome = merge(tmp_path, parts)
    refused(outcome, outcome[1][2], "was changed after it was written", "not from this medaudit version")


def test_parts_of_different_audits_are_refused_even_with_valid_digests(
    tmp_path: Path, parts: list[Doc]
) -> None:
    parts[1]["seed"] = 5
    reseal(parts[1])
    refused(merge(tmp_path, parts), "parts of different audits: their seed differs")


@pytest.mark.parametrize("digest", [None, "0" * 64, {"audit": "0" * 64}, {"audit": 1, "state": 2}])
def test_a_missing_or_damaged_digest_is_refused(tmp_path: Path, parts: list[Doc], digest: Any) -> None:
    if digest is None:
        del parts[0]["shard"]["digest"]
    else:
        parts[0]["shard"]["digest"] = digest
    outcome = merge(tmp_path, parts)
    refused(outcome, outcome[1][0], "not from this medaudit version")


def test_a_digest_changed_by_one_character_is_refused(tmp_path: Path, parts: list[Doc]) -> None:
    digest = parts[0]["shard"]["digest"]
    digest["audit"] = ("1" if digest["audit"][0] == "0" else "0") + digest["audit"][1:]
    refused(merge(tmp_path, parts), "audit digest does not match")


def test_parts_of_another_medaudit_version_are_refused(
    tmp_path: Path, parts: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sharding, "__version__", "0.0.0-other")
    refused(merge(tmp_path, parts), "not from this medaudit version")


# ---- (c) damaged or type-changed fields ----


KINDS = {"string": "0", "float": 1.0, "bool": True, "null": None, "list": [1], "object": {}}
ACCEPTED = {
    ("shard",): {"object"},
    **{("shard", key): set() for key in ("index", "count", "start", "stop", "total")},
    ("shard", "state"): {"object"},
    ("shard", "digest"): set(),
    ("schema",): set(),
    ("command",): {"string"},
    ("config",): {"object"},
    ("model",): {"object", "null"},
    ("data",): {"object"},
    ("seed",): {"null"},
    ("wall_time_s",): {"float"},
    ("results",): {"object"},
}
"""Where merge reads a part's document, and which of ``KINDS`` it may hold there (whole numbers
are fine where none is listed; the values are wrong for those fields anyway)."""


def document_edits() -> Iterator[Any]:
    """Every other kind of value, and no value, in each field merge reads; impossible numbers."""
    for path, accepted in ACCEPTED.items():
        name = ".".join(path)
        for kind, value in KINDS.items():
            if kind not in accepted:
                yield pytest.param(path, value, id=f"{name}-{kind}")
        yield pytest.param(path, ..., id=f"{name}-missing")
    for key, value in [("index", -1), ("index", 3), ("count", 0), ("start", -8), ("stop", 0), ("stop", 999)]:
        yield pytest.param(("shard", key), value, id=f"shard.{key}={value}")
    yield pytest.param(("wall_time_s",), -1.0, id="wall_time_s=-1")


@pytest.mark.parametrize(("path", "value"), list(document_edits()))
def test_damaged_document_fields_give_one_line(
    tmp_path: Path, parts: list[Doc], path: tuple, value: Any
) -> None:
    doc = parts[1]
    for key in path[:-1]:
        doc = doc[key]
    if value is ...:
        del doc[path[-1]]
    else:
        doc[path[-1]] = value
    outcome = merge(tmp_path, parts)
    refused(outcome, outcome[1][1])


def nodes(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        yield from nodes(child, (*path, key))


def node(encoded: Any, marker: str, nth: int = 0) -> dict[str, Any]:
    """The nth encoded object with ``marker`` (``__tensor__``, ``__dataclass__`` ...)."""
    found = [v for _, v in nodes(encoded) if isinstance(v, dict) and marker in v]
    return found[nth]


def on_array(**fields: Any) -> Edit:
    def edit(encoded: Any) -> None:
        array = node(encoded, "__tensor__")["__tensor__"]
        for key, value in fields.items():
            if value is ...:
                del array[key]
            else:
                array[key] = value(array[key]) if callable(value) else value

    return edit


def on_node(marker: str, change: Callable[[dict[str, Any]], None]) -> Edit:
    return lambda encoded: change(node(encoded, marker))


def replace_first_field(value: Any) -> Edit:
    """Put ``value`` where the first dataclass's first field was."""

    def edit(encoded: Any) -> None:
        fields = node(encoded, "__dataclass__")["fields"]
        fields[next(iter(fields))] = value

    return edit


def rename_first_field(data: dict[str, Any]) -> None:
    name = next(iter(data["fields"]))
    data["fields"][name + "_renamed"] = data["fields"].pop(name)


def drop_one_sample(data: dict[str, Any]) -> None:
    array = decode(data)
    data.clear()
    data.update(encode(array[:-1]))


def drop_sections(encoded: dict[str, Any]) -> None:
    encoded["__dict__"] = [pair for pair in encoded["__dict__"] if pair[0] != "sections"]


def set_entry(key: str, value: Any) -> Edit:
    """Set an entry of the state's top-level dict (sections, warnings, gate)."""

    def edit(encoded: dict[str, Any]) -> None:
        for pair in encoded["__dict__"]:
            if pair[0] == key:
                pair[1] = value

    return edit


STATE_EDITS: dict[str, Edit] = {
    "base64-garbage": on_array(base64="!!not base64!!"),
    "base64-not-ascii": on_array(base64="ééé"),
    "base64-truncated": on_array(base64=lambda text: text[:-8]),
    "base64-number": on_array(base64=12),
    "dtype-unknown": on_array(dtype="float99"),
    "dtype-object": on_array(dtype="|O"),
    "dtype-structured": on_array(dtype="i4,i4"),
    "dtype-text": on_array(dtype="<U2"),
    "dtype-number": on_array(dtype=7),
    "dtype-missing": on_array(dtype=...),
    "shape-too-big": on_array(shape=[999, 2]),
    "shape-negative": on_array(shape=[-16, -1]),
    "shape-string": on_array(shape="8x2"),
    "shape-floats": on_array(shape=[8.0, 2.0]),
    "shape-missing": on_array(shape=...),
    "array-not-object": on_node("__tensor__", lambda d: d.update(__tensor__="abc")),
    "field-renamed": on_node("__dataclass__", rename_first_field),
    "field-missing": on_node("__dataclass__", lambda d: d["fields"].popitem()),
    "fields-a-list": on_node("__dataclass__", lambda d: d.update(fields=[])),
    "fields-missing": on_node("__dataclass__", lambda d: d.pop("fields")),
    "type-unknown": on_node("__dataclass__", lambda d: d.update(__dataclass__="medaudit.evaluate:Nope")),
    "type-foreign": on_node("__dataclass__", lambda d: d.update(__dataclass__="os:system")),
    "type-a-function": on_node("__dataclass__", lambda d: d.update(__dataclass__="medaudit.sharding:decode")),
    "type-on-two-lines": on_node("__dataclass__", lambda d: d.update(__dataclass__="medaudit.x\nerror: y:Z")),
    "type-a-number": on_node("__dataclass__", lambda d: d.update(__dataclass__=5)),
    "enum-value": on_node("__enum__", lambda d: d.update(value="no such task")),
    "enum-value-long": on_node("__enum__", lambda d: d.update(value="x\n" * 10_000)),
    "enum-not-an-enum": on_node("__enum__", lambda d: d.update(__enum__="medaudit.evaluate:EvalResult")),
    "tuple-not-a-list": on_node("__tuple__", lambda d: d.update(__tuple__="ab")),
    "dict-not-pairs": on_node("__dict__", lambda d: d.update(__dict__=[[1]])),
    "dict-unhashable-key": on_node("__dict__", lambda d: d.update(__dict__=[[[1, 2], 3]])),
    "dict-not-a-list": on_node("__dict__", lambda d: d.update(__dict__={"a": 1})),
    "float-text": replace_first_field({"__float__": "abc"}),
    "float-number-text": replace_first_field({"__float__": [1]}),
    "unknown-marker": replace_first_field({"__bogus__": 1}),
    "one-sample-dropped": on_node("__tensor__", drop_one_sample),
    "sections-missing": drop_sections,
    "sections-empty": set_entry("sections", {"__dict__": []}),
    "sections-not-results": set_entry("sections", {"__dict__": [["eval", 1]]}),
    "warnings-not-text": set_entry("warnings", [1]),
    "gate-a-file-name": set_entry("gate", "policy.toml"),
    "state-not-a-dict": lambda encoded: encoded.update(__tuple__=[]) or encoded.pop("__dict__"),
}


@pytest.mark.parametrize("resealed", [False, True], ids=["stale-digest", "recomputed-digest"])
@pytest.mark.parametrize("edit", list(STATE_EDITS.values()), ids=list(STATE_EDITS))
def test_damaged_states_give_one_line(tmp_path: Path, parts: list[Doc], edit: Edit, resealed: bool) -> None:
    """Stale digest: the digest check refuses. Recomputed: the decoder's own checks refuse."""
    edit(parts[1]["shard"]["state"])
    if resealed:
        reseal(parts[1])
    outcome = merge(tmp_path, parts)
    message = refused(outcome, outcome[1][1])
    if not resealed:
        assert "was changed after it was written" in message


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("[]", id="a-list"),
        pytest.param("null", id="null"),
        pytest.param('"text"', id="a-string"),
        pytest.param("not json {", id="not-json"),
        pytest.param("", id="empty"),
        pytest.param(b"\xff\xfe\x00garbage", id="binary"),
        pytest.param('{"schema": "medaudit/1", "results": {}, "seed": ' + "1" * 5000 + "}", id="huge-int"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="deeply-nested"),
        pytest.param("directory", id="a-directory"),
        pytest.param("missing", id="no-such-file"),
    ],
)
def test_unreadable_parts_give_one_line(tmp_path: Path, parts: list[Doc], content: str | bytes) -> None:
    if content in ("directory", "missing"):
        content = tmp_path / content
        if content.name == "directory":
            content.mkdir()
    outcome = merge(tmp_path, [parts[0], content, parts[2]])
    refused(outcome, outcome[1][1])


def test_states_that_do_not_fit_together_give_one_line(tmp_path: Path, parts: list[Doc]) -> None:
    """A part with three classes of logits among parts with two, digest recomputed."""
    value = state(parts[1])
    result = value["sections"]["eval"]
    value["sections"]["eval"] = replace(
        result, logits=torch.cat([result.logits, result.logits[:, :1]], dim=1)
    )
    put_state(parts[1], value)
    reseal(parts[1])
    refused(merge(tmp_path, parts), "the parts' states do not fit together")
