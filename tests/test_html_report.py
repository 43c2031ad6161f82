"""The self-contained HTML report: content, escaping, no external references, and real rendering.

The browser tests open the page in headless Chromium with DNS disabled, so a figure only shows if
it is truly embedded; they skip when no Chromium is installed, except under CI (``$CI`` set), where
a skip would hide a broken report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from medaudit.report import figures
from medaudit.report.html import render_html, write_html

EPS = [0.5 / 255, 1 / 255, 2 / 255, 4 / 255]
ATTACKS = ["apgd-ce", "apgd-dlr", "square"]
CORRUPTIONS = ["pixelate", "gaussian_noise", "speckle_noise", "brightness_down"]
IMG_SRC = re.compile(r"<img\b[^>]*?\bsrc=\"([^\"]*)\"[^>]*>", re.S)
SECTION_HEADINGS = [
    "Summary",
    "Gate",
    "Clean metrics",
    "Adversarial robustness",
    "Distribution shift",
    "Intrinsic properties",
    "Example images",
    "Warnings",
    "Configuration",
]


# ------------------------------------------------------------------------------- synthetic documents


def _eval_results() -> dict[str, Any]:
    return {
        "task": "binary-class",
        "class_names": ["normal", "pneumonia"],
        "n": 624,
        "accuracy": 0.9054,
        "balanced_accuracy": 0.8782,
        "auc": 0.9745,
        "per_class_recall": {"normal": 0.7692, "pneumonia": 0.9872},
        "confusion_matrix": [[180, 54], [5, 385]],
    }


def _attack_results() -> dict[str, Any]:
    sweep = []
    for k, eps in enumerate(EPS):
        for i, name in enumerate([*ATTACKS, "worst-case"]):
            robust = 0.9 - 0.12 * (k + 1) - 0.01 * min(i, 2)
            record = {
                "attack": name,
                "norm": "linf",
                "eps": eps,
                "eps_grey_levels": eps * 255,
                "n": 624,
                "clean_accuracy": 0.9054,
                "robust_accuracy": robust,
                "attack_success_rate": 1 - robust / 0.9054,
            }
            if name == "worst-case":
                record.update(
                    {
                        "auc_under_attack": 0.9 - 0.1 * k,
                        "per_class_robust_recall": {"normal": 0.5, "pneumonia": 0.8},
                        "broken_by": {"apgd-ce": 60, "apgd-dlr": 3, "square": 1},
                        "perturbation": {"mean_linf": eps, "max_linf": eps, "mean_l2": 0.1, "max_l2": 0.2},
                    }
                )
            sweep.append(record)
    worst = [r["robust_accuracy"] for r in sweep if r["attack"] == "worst-case"]
    return {
        "task": "binary-class",
        "class_names": ["normal", "pneumonia"],
        "n": 624,
        "clean_accuracy": 0.9054,
        "attacks": ATTACKS,
        "sweep": sweep,
        "curve": {"eps": [0.0, *EPS], "robust_accuracy": [0.9054, *worst], "normalised_area": 0.55},
        "notes": ["apgd-dlr uses the CW margin loss: DLR needs 3 or more mutually exclusive classes"],
        "checks": [
            {"check": "monotone in eps", "passed": True, "detail": "robust count never rises"},
            {"check": "perturbation within eps", "passed": True, "detail": "max 0.0157 ≤ eps"},
            {"check": "unbounded budget breaks the model", "passed": False, "detail": "12% left at eps 0.5"},
        ],
    }


def _shift_results() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    cells, per = [], []
    for name in CORRUPTIONS:
        for severity in range(1, 6):
            drop = float(rng.normal(0.03 * severity, 0.02))
            cells.append(
                {
                    "corruption": name,
                    "family": "noise",
                    "severity": severity,
                    "n": 624,
                    "accuracy": 0.9054 - drop,
                    "balanced_accuracy": 0.87 - drop,
                    "balanced_error": 0.13 + drop,
                    "auc": 0.97 - drop / 2,
                    "accuracy_drop": drop,
                    "balanced_error_drop": drop,
                }
            )
        per.append(
            {
                "corruption": name,
                "params_from": "pneumoniamnist",
                "balanced_error": 0.2,
                "be_drop": 0.08,
                "normalised_be": None,
                "rbe": None,
                "rbe_denominator": None,
                "rbe_flagged": None,
                "baseline_note": "no AlexNet baseline",
            }
        )
    return {
        "task": "binary-class",
        "label": "MedMNIST-C-style",
        "clean": {
            "n": 624,
            "accuracy": 0.9054,
            "balanced_accuracy": 0.878,
            "balanced_error": 0.122,
            "auc": 0.97,
        },
        "corruptions": cells,
        "per_corruption": per,
        "summary": {
            "clean_be": 0.1218,
            "mean_be": 0.1966,
            "worst_corruption": "brightness_down",
            "worst_corruption_be": 0.3639,
            "mean_normalised_be": None,
            "mean_rbe": None,
            "rbe_excluded": [],
            "baseline_missing": [],
            "mean_accuracy_drop": 0.0830,
            "mean_auc_drop": 0.0223,
        },
        "baseline": None,
        "baseline_note": "scaled mode (MedMNIST-C-style): not comparable with the 224 px AlexNet baselines",
        "notes": [],
    }


def _intrinsic_results() -> dict[str, Any]:
    return {
        "representation": {
            "images": "[0,1] intensities, flattened",
            "channels": 1,
            "size": [28, 28],
            "dims": 784,
        },
        "label_sharpness": {
            "k_f": 0.6618,
            "quantiles": {"q50": 0.3586, "q90": 0.4373, "q99": 0.508},
            "closest_cross_label_distance": 1.511,
            "median_cross_label_distance": 2.79,
            "median_same_label_distance": 2.13,
            "nearest_neighbour_label_disagreement": 0.0633,
            "closest_pairs": [{"a": 1841, "b": 4564, "distance": 1.511}],
            "exact_duplicates": 18,
            "cross_label_duplicates": [],
            "n": 4708,
            "dims": 784,
        },
        "d_data": {
            "mle": 15.33,
            "twonn": 19.17,
            "n": 4690,
            "duplicates_removed": 18,
            "dims": 784,
            "k": 20,
            "normalizer": "k-1",
            "mle_interval": [15.13, 15.52],
            "twonn_interval": [18.27, 20.07],
        },
        "d_repr": {
            "mle": 11.02,
            "twonn": 15.41,
            "n": 4690,
            "dims": 128,
            "k": 20,
            "mle_interval": [10.9, 11.15],
            "twonn_interval": [14.67, 16.14],
            "layer": "input of Gemm node 'node_linear' (128 features)",
        },
        "model_smoothness": {
            "mean": 490.85,
            "median": 473.5,
            "q90": 655.4,
            "max": 1012.7,
            "n": 512,
            "eps": 0.01,
        },
        "interpretation": [
            "the closest differently-labelled images are 1.511 apart: K_F = 0.662",
            "the images lie near a 19.2-dimensional manifold in 784 pixel dimensions",
        ],
        "notes": ["model smoothness on 512 of 4708 images (seeded)"],
        "d_repr_le_d_data": {"mle": True, "twonn": True},
    }


def _base(command: str, results: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": "medaudit/1",
        "command": command,
        "config": {"device": "auto", "data": {"dataset": "pneumoniamnist", "size": 28}, "seed": 0},
        "model": {
            "path": "sample_models/pneumoniamnist_rescnn.pt",
            "format": "torchscript",
            "backend": "torch",
            "sha256": "9431f3c91c3e0af9b610df6fb7826ea3b1464064e855688038a9e3f3d7923c01",
            "task": "binary-class",
            "class_names": ["normal", "pneumonia"],
        },
        "data": {"source": "medmnist", "name": "pneumoniamnist", "split": "test", "size": 28, "n": 624},
        "seed": 0,
        "versions": {"python": "3.11.7", "medaudit": "0.1.0"},
        "wall_time_s": 123.4,
        "warnings": ["honesty check failed: unbounded budget breaks the model: 12% left at eps 0.5"],
        "results": results,
    }


def _gate(passed: bool) -> list[dict[str, Any]]:
    return [
        {"metric": "eval.accuracy", "op": ">=", "threshold": 0.9, "value": 0.9054, "passed": True},
        {
            "metric": "attack.robust_accuracy@1/255",
            "op": ">=",
            "threshold": 0.5,
            "value": 0.66 if passed else 0.41,
            "passed": passed,
        },
    ]


def _run_doc(gate_passes: bool = False) -> dict[str, Any]:
    results = {
        "eval": _eval_results(),
        "attack": _attack_results(),
        "shift": _shift_results(),
        "intrinsic": _intrinsic_results(),
    }
    return {**_base("run", results), "gate": _gate(gate_passes)}


def _example_images() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    rows = {
        name: [
            np.clip(clean.astype(int) + rng.integers(-20 * s, 20 * s + 1, clean.shape), 0, 255).astype(
                np.uint8
            )
            for s in range(1, 6)
        ]
        for name in CORRUPTIONS
    }
    grid = figures.corruption_grid_png(clean, rows, "corruptions")
    adv = Image.fromarray(rng.integers(0, 256, (160, 480, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    adv.save(buffer, format="PNG")
    return {"corruption grid": grid, "adversarial examples": buffer.getvalue()}


N_FIGURES = 4  # robustness curve, shift heatmap, and the two example images


# ----------------------------------------------------------------------------------------- helpers


def _decode_png(src: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    raw = base64.b64decode(re.sub(r"\s", "", src[len(prefix) :]), validate=True)
    with Image.open(io.BytesIO(raw)) as image:
        assert image.format == "PNG"
        image.load()
        return np.asarray(image.convert("RGB"))


class _TagBalance(HTMLParser):
    """Counts unclosed non-void elements, so a broken section cannot swallow the rest of the page."""

    VOID: ClassVar[set[str]] = {"meta", "img", "br", "hr", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()


def _headings(page: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<h2>(.*?)</h2>", page, re.S)]


# ------------------------------------------------------------------------------------------- tests


def test_run_page_has_every_section_and_a_failing_gate() -> None:
    page = render_html(_run_doc(gate_passes=False), _example_images())
    headings = _headings(page)
    for heading in SECTION_HEADINGS:
        assert any(h.startswith(heading) for h in headings), (heading, headings)
    assert '<span class="verdict fail">FAIL</span>' in page
    assert "PASS" not in page
    assert "1 of 2 rules pass" in page
    assert page.count('<td class="fail">FAIL</td>') == 2  # one gate rule, one honesty check
    # the header and the numbers a reader needs
    for text in ("9431f3c91c3e0af9", "pneumoniamnist", "123.4 s", "0.1.0", "0.9054", "brightness_down"):
        assert text in page, text
    assert "robust accuracy, linf eps 0.003922 (1/255)" in page
    assert "the images lie near a 19.2-dimensional manifold" in page
    assert "<details><summary>Full configuration (JSON)</summary>" in page
    assert "&quot;dataset&quot;: &quot;pneumoniamnist&quot;" in page  # pretty JSON, escaped
    parser = _TagBalance()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []


def test_passing_gate_says_pass_in_green() -> None:
    page = render_html(_run_doc(gate_passes=True))
    assert page.count('<span class="verdict pass">PASS</span>') == 2  # header badge and gate section
    assert "verdict fail" not in page
    assert '<td class="fail">FAIL</td>' in page  # the failed honesty check is still shown


def test_every_figure_is_an_embedded_non_blank_png() -> None:
    images = _example_images()
    page = render_html(_run_doc(), images)
    tags = re.findall(r"<img\b[^>]*>", page)
    sources = IMG_SRC.findall(page)
    assert len(tags) == len(sources) == N_FIGURES
    for tag in tags:
        alt = re.search(r'\balt="([^"]+)"', tag)
        assert alt and alt.group(1).strip(), tag[:80]
    decoded = [_decode_png(src) for src in sources]
    for pixels in decoded:
        height, width, _ = pixels.shape
        assert height > 100 and width > 100
        assert pixels.std() > 5
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
    # the caller's images are embedded byte for byte
    for png in images.values():
        assert any(
            np.array_equal(_decode_png("data:image/png;base64," + base64.b64encode(png).decode()), d)
            for d in decoded
        )


def test_page_references_nothing_outside_itself() -> None:
    doc = _run_doc()
    doc["warnings"].append("model card at HTTPS://example.org/card and http://cdn.test/x.js")
    doc["config"]["card_url"] = "http://example.org/card.json"
    page = render_html(doc, _example_images())
    assert "http" not in page.lower()
    assert "HTTPS://example.org/card" in page.replace("&#80;", "P")  # the text is kept, just not as a URL
    for match in re.finditer(r"\bsrc\s*=\s*[\"']?([^\"' >]*)", page, re.I):
        assert match.group(1).startswith("data:image/png;base64,"), match.group(0)[:60]
    lowered = page.lower()
    for forbidden in (
        "<script",
        "<link",
        "@import",
        "url(",
        "<iframe",
        "<object",
        "<embed",
        "srcset",
        "href=",
    ):
        assert forbidden not in lowered, forbidden


def test_text_from_the_document_is_escaped() -> None:
    doc = _run_doc()
    doc["model"]["path"] = 'models/<script>alert("x")</script>&co.pt'
    doc["results"]["eval"]["per_class_recall"] = {"<b>normal</b>": 0.77, "pneumonia": 0.99}
    doc["gate"][0]["metric"] = "eval.accuracy<img>"
    page = render_html(doc)
    assert "models/&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;co.pt" in page
    assert "&lt;b&gt;normal&lt;/b&gt;" in page
    assert "eval.accuracy&lt;img&gt;" in page
    assert "<script" not in page and "<b>" not in page
    assert len(re.findall(r"<img\b", page)) == 2  # curve and heatmap only: no injected tag


def test_single_command_shift_document() -> None:
    doc = _base("shift", _shift_results())
    page = render_html(doc)
    headings = _headings(page)
    assert any(h.startswith("Distribution shift") for h in headings)
    for absent in (
        "Gate",
        "Clean metrics",
        "Adversarial robustness",
        "Intrinsic properties",
        "Example images",
    ):
        assert not any(h.startswith(absent) for h in headings), absent
    assert 'class="verdict' not in page
    (src,) = IMG_SRC.findall(page)
    assert _decode_png(src).shape[0] > 100
    assert "not comparable with the 224 px AlexNet baselines" in page
    assert "mean corrupted balanced error" in page


def test_gate_document_shows_its_verdicts_with_messages() -> None:
    verdicts = [
        {**v, "key": v["metric"], "message": f"value {v['value']} vs {v['threshold']}"} for v in _gate(False)
    ]
    doc = _base("gate", {"passed": False, "failed": 1, "verdicts": verdicts, "report": {"command": "run"}})
    page = render_html(doc)
    assert '<span class="verdict fail">FAIL</span>' in page
    assert "value 0.41 vs 0.5" in page and "<th>detail</th>" in page


def test_unknown_command_falls_back_to_a_generic_section() -> None:
    doc = _base("attack-margin", {"n": 10, "attack": "pgd-cw", "quantiles": {"q50": 0.01}})
    page = render_html(doc)
    assert "attack-margin" in page and "pgd-cw" in page and "&quot;q50&quot;: 0.01" in page


def test_shift_heatmap_copes_with_missing_cells() -> None:
    results = _shift_results()
    results["corruptions"] = [
        c for c in results["corruptions"] if not (c["corruption"] == "pixelate" and c["severity"] == 5)
    ]
    results["corruptions"][0]["accuracy_drop"] = None
    page = render_html(_base("shift", results))
    assert len(IMG_SRC.findall(page)) == 1


def test_non_png_image_is_rejected() -> None:
    with pytest.raises(ValueError, match="PNG"):
        render_html(_run_doc(), {"grid": b"GIF89a not a png"})


def test_write_html_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("previous report")
    with pytest.raises(ValueError):
        write_html(target, _run_doc(), {"grid": b"not a png"})
    assert target.read_text() == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    write_html(target, _run_doc())
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert os.stat(target).st_mode & 0o044


def test_png_variants_share_the_saved_figures(tmp_path: Path) -> None:
    values = np.array([[0.1, -0.05, np.nan], [0.3, 0.2, 0.0]])
    args = (values, ["a", "b"], ["s1", "s2", "s3"], "t", "v")
    figures.save_heatmap(tmp_path / "h.png", *args)
    assert (tmp_path / "h.png").read_bytes() == figures.heatmap_png(*args)
    sweep = _attack_results()["sweep"]
    figures.save_robustness_curve(tmp_path / "c.png", sweep, "t")
    assert (tmp_path / "c.png").read_bytes() == figures.robustness_curve_png(sweep, "t")


def test_robustness_curve_draws_worst_case_and_each_attack() -> None:
    sweep = _attack_results()["sweep"]
    fig = figures._robustness_curve_figure(sweep, "t")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {*(f"after {a} (cumulative)" for a in ATTACKS), "worst case (all attacks)"}
    worst = lines["worst case (all attacks)"]
    assert list(worst.get_xdata()) == [0.0, *EPS]
    assert worst.get_ydata()[0] == pytest.approx(0.9054)
    assert worst.get_linewidth() > 2 * lines["after square (cumulative)"].get_linewidth()
    top = [a for a in ax.child_axes if "255" in a.xaxis.get_label_text()]
    assert top, "eps axis is not also labelled in 1/255 units"
    with pytest.raises(ValueError, match="worst-case"):
        figures.robustness_curve_png([r for r in sweep if r["attack"] != "worst-case"], "t")


# ------------------------------------------------------------------------------------- the browser

PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-loaded", String(ok.length));
  document.body.setAttribute("data-boxes", JSON.stringify(images.map(function (i) {
    var r = i.getBoundingClientRect(), s = getComputedStyle(i);
    return [r.left + window.scrollX + parseFloat(s.borderLeftWidth),
            r.top + window.scrollY + parseFloat(s.borderTopWidth),
            i.clientWidth, i.clientHeight, i.naturalWidth, i.naturalHeight];
  })));
  document.body.setAttribute("data-height", String(document.documentElement.scrollHeight));
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    message = "no chromium or chromium-browser on PATH (Debian: apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the browser test, not skip it")
    pytest.skip(message)


def _browse(chromium: str, page: Path, profile: Path, *extra: str, height: int = 1200) -> str:
    """Run headless Chromium offline (every host name fails to resolve) on a local file."""
    command = [
        chromium,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--force-color-profile=srgb",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        f"--window-size=1280,{height}",
        "--virtual-time-budget=10000",
        *extra,
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.browser
def test_browser_paints_every_figure_exactly(tmp_path: Path) -> None:
    """Chromium must load every <img> offline and paint the whole embedded PNG, pixel for pixel.

    The DOM probe (a test-only copy of the page with an inline script) says which images decoded
    and where their content boxes are; the screenshot of the unmodified page is then compared with
    the PNGs themselves, which catches a truncated or corrupt data URI that still shows its top.
    """
    chromium = _chromium()
    page = render_html(_run_doc(), _example_images())
    assert "<script" not in page  # the probe below exists only in this test's copy
    expected = [_decode_png(src) for src in IMG_SRC.findall(page)]
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _browse(chromium, probe, tmp_path / "profile", "--dump-dom")
    body = re.search(r"<body\b([^>]*)>", dom)
    assert body, dom[:500]
    attrs = {k: html.unescape(v) for k, v in re.findall(r'(data-[a-z]+)="([^"]*)"', body.group(1))}
    assert attrs.get("data-images") == str(N_FIGURES), attrs
    assert attrs.get("data-loaded") == str(N_FIGURES), attrs
    boxes = json.loads(attrs["data-boxes"])
    height = int(attrs["data-height"])

    plain = tmp_path / "report.html"
    plain.write_text(page, encoding="utf-8")
    shot = tmp_path / "shot.png"
    _browse(chromium, plain, tmp_path / "profile2", f"--screenshot={shot}", height=min(height + 20, 16000))
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert len(boxes) == len(expected) == N_FIGURES
    for (left, top, width, h, natural_w, natural_h), png in zip(boxes, expected, strict=True):
        assert (natural_h, natural_w) == png.shape[:2]
        assert (h, width) == png.shape[:2], "figure scaled: the pixel comparison needs a 1:1 layout"
        # layout positions can be fractional (line heights); the paint snaps to a pixel nearby
        best = None
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                y, x = round(top) + dy, round(left) + dx
                region = pixels[y : y + h, x : x + width]
                if region.shape != png.shape:
                    continue
                difference = np.abs(region - png.astype(int))
                if best is None or difference.mean() < best.mean():
                    best = difference
        assert best is not None, (left, top, png.shape, pixels.shape)
        assert best.mean() < 1.0 and np.percentile(best, 99.9) <= 8, (best.mean(), best.max())


def test_confounders_section_has_its_heatmap_and_ranking() -> None:
    probes = [
        {"artifact": a, "strength": s, "position": None, "flip_rate": f, "n": 10}
        for a, s, f in (("tag", 0.5, 0.0), ("tag", 1.0, 0.1), ("lowpass", 0.5, 0.2), ("lowpass", 1.0, 0.6))
    ]
    ranking = [
        {
            "artifact": "lowpass",
            "worst_flip_rate": 0.6,
            "worst_auc_drop_reversed": 0.3,
            "summary": "sensitive",
        }
    ]
    doc = {
        "schema": "medaudit/1",
        "command": "confounders",
        "results": {"probes": probes, "ranking": ranking},
    }
    page = render_html(doc)
    assert "Confounder probes" in page and page.count("<img") == 1
    assert "sensitive" in page and "lowpass" in page


def test_confounders_section_shows_the_calibrated_verdicts_and_discovery() -> None:
    ranking = [
        {
            "artifact": "dose_noise", "position": None, "verdict": "shortcut", "towards": "normal",
            "effect": 0.202, "effect_ci": [0.179, 0.226], "control": 0.122, "worst_flip_rate": 0.312,
            "summary": "shortcut towards normal",
        },
        {
            "artifact": "patch", "position": "centre", "verdict": "none", "towards": "normal",
            "effect": 0.03, "effect_ci": [0.023, 0.036], "control": 0.048, "worst_flip_rate": 0.066,
            "summary": "no shortcut",
        },
    ]  # fmt: skip
    discovery = [
        {
            "region": "top-left",
            "towards": "pneumonia",
            "flip_rate": 0.98,
            "control_flip_rate": 0.2,
            "flagged": True,
        },
        {
            "region": "centre",
            "towards": "normal",
            "flip_rate": 0.3,
            "control_flip_rate": 0.25,
            "flagged": False,
        },
    ]
    doc = {
        "schema": "medaudit/1",
        "command": "confounders",
        "results": {"ranking": ranking, "discovery": discovery},
    }
    page = render_html(doc)
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    dose = next(r for r in rows if r.startswith("<td>dose_noise</td>"))
    assert "shortcut" in dose and "0.20 [0.18, 0.23]" in dose and "0.122" in dose
    flagged = next(r for r in rows if r.startswith("<td>top-left</td>"))
    assert 'class="fail">FLAGGED' in flagged and "0.980" in flagged
    assert "FLAGGED" not in next(r for r in rows if r.startswith("<td>centre</td>"))
