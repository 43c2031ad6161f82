"""Does ``--device cuda`` give the CPU's numbers, and how much faster is it? Needs a CUDA GPU.

    MEDAUDIT_DATA_ROOT=../shared/data/medmnist python benchmarks/cuda_check.py [--limit 400]

Runs the whole audit (``medaudit run`` on the example audit file: eval, attack at 1/255 and
2/255 with the ``auto`` plan, shift, confounders, intrinsic) on the sample PneumoniaMNIST model
once with ``--device cpu`` and once with ``--device cuda``, on the same stratified test subset
and seed; then ``medaudit eval`` and a PGD ``medaudit attack`` on the model's three formats
(TorchScript, torch.export, ONNX) on both devices. Every gateable number is compared. A GPU
sums floats in another order, so an attack may break an image or two differently and the
feature-space estimates move in the last digits: a number "agrees" when it is within two
images (2/n) for the shares and within 1e-3 relative otherwise.

Writes RESULTS-cuda.md and RESULTS-cuda.json to --out-dir (default benchmarks/); the raw
reports and audit files go to --reports (default: a temporary folder, removed afterwards). Nothing in the test suite needs a GPU; this is the check a session
with one runs.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from facts import machine_facts

from medaudit.audit_config import EXAMPLE
from medaudit.gate.metrics import extract_metrics

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "sample_models" / "pneumoniamnist_rescnn"
SHARES = ("accuracy", "auc", "rate", "recall", "area", "be", "drop")


def medaudit(args: list[str], out: Path) -> dict[str, Any]:
    """One CLI call (a fresh process, as a user runs it): its JSON report and seconds, or its error."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "medaudit.cli", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: a failing gate, still a full report
        lines = done.stderr.strip().splitlines() or ["no output"]
        return {"error": f"exit {done.returncode}: {lines[-1]}", "seconds": seconds}
    return {"doc": json.loads(out.read_text()), "seconds": seconds}


def agree(key: str, cpu: float, cuda: float, n: int) -> bool:
    if math.isnan(cpu) or math.isnan(cuda):
        return math.isnan(cpu) and math.isnan(cuda)
    if any(word in key for word in SHARES):
        return abs(cpu - cuda) <= 2 / n + 1e-9
    return abs(cpu - cuda) <= 1e-3 * max(abs(cpu), abs(cuda), 1e-12)


def compare(name: str, cpu: dict[str, Any], cuda: dict[str, Any]) -> list[dict[str, Any]]:
    n = int(cpu["doc"]["data"]["n"])
    a, b = extract_metrics(cpu["doc"]), extract_metrics(cuda["doc"])
    return [
        {
            "run": name,
            "metric": key,
            "cpu": a[key],
            "cuda": b[key],
            "n": n,
            "agrees": agree(key, a[key], b[key], n),
        }
        for key in sorted(a.keys() & b.keys())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=400, help="stratified test images (default 400)")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent)
    parser.add_argument("--reports", type=Path, default=None, help="keep the raw reports here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this check compares --device cuda with --device cpu")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        reports_dir = args.reports or Path(scratch)
        reports_dir.mkdir(parents=True, exist_ok=True)
        rows, timings = run_all(args.limit, reports_dir)
    write(args.out_dir, rows, timings, args.limit)
    failed = [r for r in rows if not r["agrees"]]
    print(
        f"{len(rows) - len(failed)}/{len(rows)} numbers agree; {sum(bool(t['errors']) for t in timings)} runs failed"
    )
    sys.exit(1 if failed or any(t["errors"] for t in timings) else 0)


def run_all(limit_n: int, out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every run on both devices; raw reports under ``out``."""
    example = EXAMPLE.replace('path = "sample_models/pneumoniamnist_rescnn.pt"', f'path = "{MODEL}.pt"')
    example = example.replace("# limit = 500", f"limit = {limit_n}")

    def audit_file(device: str) -> str:
        """``medaudit run`` takes its device from the file."""
        path = out / f"cuda-check-audit-{device}.toml"
        path.write_text(example.replace('device = "auto"', f'device = "{device}"'))
        return str(path)

    rows: list[dict[str, Any]] = []
    timings: list[dict[str, Any]] = []
    limit = ["--limit", str(limit_n)]
    runs = {"run (every audit)": lambda d: ["run", audit_file(d)]}
    for fmt in (".pt", ".pt2", ".onnx"):
        runs[f"eval {fmt}"] = lambda d, f=fmt: ["eval", f"{MODEL}{f}", "--device", d, *limit]
        runs[f"attack pgd {fmt}"] = lambda d, f=fmt: [
            "attack",
            f"{MODEL}{f}",
            "--attack",
            "pgd",
            "--eps",
            "1/255,4/255",
            "--device",
            d,
            *limit,
        ]
    for name, argv in runs.items():
        reports = {}
        for device in ("cpu", "cuda"):
            slug = name.replace(" ", "-").replace("(", "").replace(")", "").replace(".", "")
            reports[device] = medaudit(argv(device), out / f"cuda-check-{slug}-{device}.json")
            print(f"{name} on {device}: {reports[device]['seconds']:.1f} s", reports[device].get("error", ""))
        errors = {d: r["error"] for d, r in reports.items() if "error" in r}
        if not errors:
            rows += compare(name, reports["cpu"], reports["cuda"])
        timings.append(
            {
                "run": name,
                "cpu_s": round(reports["cpu"]["seconds"], 2),
                "cuda_s": round(reports["cuda"]["seconds"], 2),
                "errors": errors,
            }
        )
    return rows, timings


def write(out: Path, rows: list[dict[str, Any]], timings: list[dict[str, Any]], limit: int) -> None:
    facts = [*machine_facts(), f"GPU: {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}"]
    (out / "RESULTS-cuda.json").write_text(
        json.dumps({"facts": facts, "limit": limit, "timings": timings, "metrics": rows}, indent=1)
    )
    lines = [
        "# `--device cuda` against `--device cpu`",
        "",
        f"`python benchmarks/cuda_check.py --limit {limit}` on {time.strftime('%Y-%m-%d')}; "
        f"PneumoniaMNIST test split, stratified {limit} images, seed 0, sample model "
        "`pneumoniamnist_rescnn` in each format. Seconds are whole CLI calls (process start included).",
        "",
        *[f"- {fact}" for fact in facts],
        "",
        "| run | cpu s | cuda s | speed-up | errors |",
        "|---|---|---|---|---|",
        *[
            f"| {t['run']} | {t['cpu_s']:.1f} | {t['cuda_s']:.1f} | {t['cpu_s'] / t['cuda_s']:.1f}× | "
            f"{'; '.join(f'{d}: {e}' for d, e in t['errors'].items()) or '-'} |"
            for t in timings
        ],
        "",
        f"{sum(r['agrees'] for r in rows)} of {len(rows)} numbers agree (shares within 2/n, "
        "others within 1e-3 relative):",
        "",
        "| run | metric | cpu | cuda | agrees |",
        "|---|---|---|---|---|",
        *[
            f"| {r['run']} | `{r['metric']}` | {r['cpu']:.4g} | {r['cuda']:.4g} | "
            f"{'yes' if r['agrees'] else '**no**'} |"
            for r in rows
        ],
        "",
    ]
    (out / "RESULTS-cuda.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
