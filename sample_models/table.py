"""Print the README's sample-model table from the model cards (metrics measured by medaudit).

python sample_models/table.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
BASELINE = {
    "pneumoniamnist": 0.854,
    "breastmnist": 0.863,
    "retinamnist": 0.524,
}  # MedMNIST v2 ResNet-18 (28) - 3 points


def main() -> None:
    print("| model | data | training | test acc. | bar | bal. acc. | AUC | robust acc. @0.004 | AUC @0.004 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in sorted(HERE.glob("*.json")):
        card = json.loads(path.read_text())
        if "metrics" not in card:  # still being measured by train.py
            continue
        test, robust = card["metrics"]["test"], card["metrics"]["robust_test"]
        adv = card["training"]["adversarial"]
        training = f"PGD-AT eps {adv['eps'] * 255:.0f}/255" if adv else "standard"
        dataset = card["dataset"]
        print(
            f"| `{card['name']}` | {dataset['name']} {dataset['size']} px | {training} | {test['accuracy']:.3f} "
            f"| {BASELINE[dataset['name']]:.3f} | {test['balanced_accuracy']:.3f} | {test['auc']:.3f} "
            f"| {robust['robust_accuracy']:.3f} | {robust['auc_under_attack']:.3f} |"
        )


if __name__ == "__main__":
    main()
