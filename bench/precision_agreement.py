"""Does a faster precision change the referral? fp32 against fp16/bf16 on the same photographs.

    .venv/bin/python bench/precision_agreement.py [--device cuda] [--count 160] [--route fundus]

The shipped model reads the photographs once in fp32 and once in each other precision on the
same device; prints the largest probability difference, how many assessed findings and how many
referrals changed, and the speed of each precision as a ratio to fp32 in this run. A precision
that flips referrals must not be the default (bf16 on a CPU did: see bench/README.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import SHARED  # noqa: E402
from ml.predictor import Predictor  # noqa: E402
from services.screening.decision import decide  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--count", type=int, default=160)
    parser.add_argument("--precisions", default="fp16,bf16")
    args = parser.parse_args()
    found = sorted((SHARED / "data" / "fundus" / "images").rglob("*.jpg"))
    paths = found[:: max(1, len(found) // args.count)][: args.count]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    model = REPO / "ml" / "models" / "fundus.pt"

    def read(precision: str) -> tuple[list[dict[str, float]], float]:
        predictor = Predictor.load(model, args.device, precision)
        predictor.predict(images[:16])  # warm-up
        started = time.perf_counter()
        rows = [r for s in range(0, len(images), 32) for r in predictor.predict(images[s : s + 32])]
        return rows, len(images) / (time.perf_counter() - started)

    reference = Predictor.load(model, args.device, "fp32")
    base_rows, base_rate = read("fp32")
    base = [decide(reference.taxonomy, r, reference.operating_point) for r in base_rows]
    print(f"{len(images)} photographs, device {reference.device}; fp32 {base_rate:.1f} img/s")
    for precision in args.precisions.split(","):
        rows, rate = read(precision)
        decisions = [decide(reference.taxonomy, r, reference.operating_point) for r in rows]
        diff = max(abs(a[c] - b[c]) for a, b in zip(base_rows, rows, strict=True) for c in a)
        findings = sum(
            f.positive != g.positive
            for a, b in zip(base, decisions, strict=True)
            for f, g in zip(a.findings, b.findings, strict=True)
            if f.assessed
        )
        flips = sum(a.referral != b.referral for a, b in zip(base, decisions, strict=True))
        print(
            f"{precision}: {rate:.1f} img/s (ratio to fp32 {rate / base_rate:.2f}); largest "
            f"probability difference {diff:.4f}; findings changed {findings}; referrals "
            f"changed {flips} of {len(images)}"
        )


if __name__ == "__main__":
    main()
