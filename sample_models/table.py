"""Print the README's sample-model table from the model cards (metrics measured by medaudit).

python sample_models/table.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
RESNET18_28 = {"pneumoniamnist": 0.854, "breastmnist": 0.863, "retinamnist": 0.524}  # MedMNIST v2 test ACC
MARGIN = 0.03  # the quality bar of a standard sample model: ResNet-18 (28) test accuracy minus 3 points


def main() -> None:
    print(
        "| model | data | training | test acc. | ResNet-18 (28) | bar | bal. acc. | AUC "
        "| robust acc. @0.004 | AUC @0.004 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in sorted(HERE.glob("*.json")):
        card = json.loads(path.read_text())
        if "metrics" not in card:  # still being measured by train.py
            continue
        test, robust = card["metrics"]["test"], card["metrics"]["robust_test"]
        adv = card["training"]["adversarial"]
        training = f"PGD-AT eps {adv['eps'] * 255:.0f}/255" if adv else "standard"
        dataset = card["dataset"]
        reference = RESNET18_28[dataset["name"]]
        bar = (
            "–"
            if adv
            else f"{reference - MARGIN:.3f} {'met' if test['accuracy'] >= reference - MARGIN else 'missed'}"
        )
        print(
            f"| `{card['name']}` | {dataset['name']} {dataset['size']} px | {training} | {test['accuracy']:.3f} "
            f"| {reference:.3f} | {bar} | {test['balanced_accuracy']:.3f} | {test['auc']:.3f} "
            f"| {robust['robust_accuracy']:.3f} | {robust['auc_under_attack']:.3f} |"
        )


if __name__ == "__main__":
    main()
