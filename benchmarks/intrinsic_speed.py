"""Speed and agreement of medaudit's intrinsic estimators against scikit-dimension.

    .venv/bin/python benchmarks/intrinsic_speed.py [--repeats 3]

Synthetic data: points on a random 10-dimensional linear subspace of R^784
plus noise 1e-3 (true d = 10), and 5,000 random 28x28 uint8 images with two
labels for the all-pairs label sharpness. Median of the repeats; writes
benchmarks/RESULTS-intrinsic.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import skdim
import torch
from facts import timed

from medaudit.intrinsic import label_sharpness, mle, twonn
from medaudit.intrinsic.neighbours import knn

OUT = Path(__file__).with_name("RESULTS-intrinsic.md")


def subspace(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((784, 10)))[0]
    return (rng.standard_normal((n, 10)) @ basis.T + 1e-3 * rng.standard_normal((n, 784))).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="runs per cell (default 3; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="5,000 points only, one run")
    parser.add_argument("--out-dir", type=Path, default=OUT.parent, help="where the results go")
    args = parser.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    rows = []
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5000, 1, 28, 28), dtype=np.uint8))
    labels = torch.arange(5000) % 2
    seconds, k_f = timed(lambda: label_sharpness(images, labels).k_f, args.repeats)
    rows.append(("label sharpness, all pairs", "5,000 x 784", f"{seconds:.2f}", "-", "-", f"K_F {k_f:.4f}"))
    for n in (5000,) if args.quick else (5000, 20000):
        x = subspace(n)
        ours, ours_mle = timed(lambda x=x: mle(knn(torch.from_numpy(x), 20)[0], 20), args.repeats)
        theirs, their_mle = timed(lambda x=x: skdim.id.MLE().fit(x).dimension_, args.repeats)
        rows.append(
            ("MLE k=20", f"{n:,} x 784", f"{ours:.2f}", f"{theirs:.2f}", f"{theirs / ours:.2f}",
             f"{ours_mle:.6f} vs {their_mle:.6f} (rel. diff {abs(ours_mle - their_mle) / their_mle:.1e})")
        )  # fmt: skip
        ours, ours_t = timed(lambda x=x: twonn(knn(torch.from_numpy(x), 2)[0]), args.repeats)
        theirs, their_t = timed(
            lambda x=x: skdim.id.TwoNN().fit(x).dimension_, 1 if n > 5000 else args.repeats
        )
        rows.append(
            ("TwoNN", f"{n:,} x 784", f"{ours:.2f}", f"{theirs:.2f}", f"{theirs / ours:.2f}",
             f"{ours_t:.6f} vs {their_t:.6f} (rel. diff {abs(ours_t - their_t) / their_t:.1e})")
        )  # fmt: skip
    facts = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"scikit-dimension {metadata.version('scikit-dimension')}, Python {platform.python_version()}"
    )
    lines = [
        "# Intrinsic estimators: medaudit vs scikit-dimension",
        "",
        f"`.venv/bin/python benchmarks/intrinsic_speed.py{' --quick' if args.quick else ''} --repeats {args.repeats}` on {time.strftime('%Y-%m-%d')}; {facts}.",
        f"Median of {args.repeats} runs (scikit-dimension TwoNN at 20,000: one run); times include the neighbour search.",
        "",
        "| what | data | medaudit s | scikit-dimension s | ratio (skdim / medaudit) | estimates |",
        "|---|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
    ]
    out = args.out_dir / OUT.name
    out.write_text("\n".join(lines))
    keys = ("what", "data", "medaudit_s", "skdim_s", "ratio_skdim_over_medaudit", "estimates")
    out.with_suffix(".json").write_text(
        json.dumps([dict(zip(keys, row, strict=True)) for row in rows], indent=2)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
