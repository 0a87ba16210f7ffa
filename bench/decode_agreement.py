"""Does the JPEG decoder change the referral? The served CPU path against the training decoder.

    .venv/bin/python bench/decode_agreement.py [--per-source 40] [--json out.json]

Each photograph of a balanced sample per source (half referable, half not, by its manifest's
labels) goes into a DICOM Ophthalmic Photography data set as a camera sends it; the shipped
fundus model then reads it three ways: decoded by Pillow from the JPEG file (how training and
every evaluation read it), by the served decoder (``dicom_gateway.pixels.decode_rgb``), and by
pydicom's own JPEG decoder (the served path before 2026-12-07). Per source: the largest
probability difference from the training decoder, assessed findings and referrals changed, and
referral sensitivity and specificity (Wilson 95 %) for each decoder. The two hospitals of
``fundus-external`` (Vietnam, Mexico) were never seen by the shipped model; the other
sources' photographs include its training set.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from pydicom import dcmread  # noqa: E402

from bench.common import SHARED  # noqa: E402
from dicom_gateway.photos import photo_to_dataset  # noqa: E402
from dicom_gateway.pixels import decode_rgb  # noqa: E402
from ml.data import Sample  # noqa: E402
from ml.operating_point import referral_figures  # noqa: E402
from ml.pipeline import load_samples  # noqa: E402
from ml.predictor import Predictor  # noqa: E402
from ml.preprocess import load_rgb  # noqa: E402
from services.screening.decision import ScreeningDecision, decide  # noqa: E402

MANIFESTS = ("fundus", "fundus-external")
NEVER_SEEN = "fundus-external"  # the two hospitals the shipped model 1.3 never saw


def balanced_sample(samples: list[Sample], model: Predictor, per_source: int) -> list[Sample]:
    """Per source, up to half referable and half not, one photograph per patient, seeded."""
    normal = {n.code for n in model.taxonomy.nodes if n.normal}
    by_source: dict[tuple[str, bool], list[Sample]] = defaultdict(list)
    seen: set[str] = set()
    for sample in sorted(samples, key=lambda s: str(s.path)):
        if sample.patient_id in seen or not sample.codes:
            continue
        seen.add(sample.patient_id)
        by_source[(sample.source, bool(sample.codes - normal))].append(sample)
    rng = random.Random(20211207)
    chosen: list[Sample] = []
    for key in sorted(by_source):
        pool = by_source[key]
        chosen += rng.sample(pool, min(len(pool), per_source // 2))
    return chosen


def pydicom_rgb(encoded: bytes) -> np.ndarray:
    """pydicom's own JPEG decoder (pixel_array), as the served path decoded before."""
    pixels = dcmread(BytesIO(encoded)).pixel_array
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return np.ascontiguousarray(pixels)


def as_sent(path: Path) -> bytes:
    buffer = BytesIO()
    photo_to_dataset(path, patient_id="BENCH").save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def changed(a: list[ScreeningDecision], b: list[ScreeningDecision]) -> tuple[int, int]:
    findings = sum(
        f.positive != g.positive
        for x, y in zip(a, b, strict=True)
        for f, g in zip(x.findings, y.findings, strict=True)
        if f.assessed
    )
    return findings, sum(x.referral != y.referral for x, y in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-source", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = Predictor.load(REPO / "ml" / "models" / "fundus.pt", "cpu", "fp32")
    samples, never_seen = [], set()
    for name in MANIFESTS:
        found = load_samples(SHARED / "data" / name / "manifest.csv", None, model.taxonomy)
        samples += found
        never_seen |= {s.source for s in found} if name == NEVER_SEEN else set()
    chosen = balanced_sample(samples, model, args.per_source)
    normal = {n.code for n in model.taxonomy.nodes if n.normal}
    decoders = {"training (Pillow)": None, "served": decode_rgb, "pydicom (before)": pydicom_rgb}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in decoders}
    started = time.perf_counter()
    for n in range(0, len(chosen), 16):
        batch = chosen[n : n + 16]
        encoded = [as_sent(s.path) for s in batch]
        for name, decoder in decoders.items():
            images = [
                load_rgb(str(s.path)) if decoder is None else decoder(e)
                for s, e in zip(batch, encoded, strict=True)
            ]
            rows[name] += model.predict(images)
        done = min(n + 16, len(chosen))
        print(f"  {done}/{len(chosen)} photographs, {time.perf_counter() - started:.0f} s",
              file=sys.stderr)  # fmt: skip
    decisions = {
        name: [decide(model.taxonomy, r, model.operating_point) for r in found]
        for name, found in rows.items()
    }
    report: dict[str, dict[str, object]] = {}
    for source in sorted({s.source for s in chosen}):
        idx = [i for i, s in enumerate(chosen) if s.source == source]
        diseased = np.array([bool(chosen[i].codes - normal) for i in idx])
        entry: dict[str, object] = {"photographs": len(idx), "never_seen": source in never_seen}
        base = [rows["training (Pillow)"][i] for i in idx]
        for name in decoders:
            mine = [rows[name][i] for i in idx]
            findings, referrals = changed(
                [decisions["training (Pillow)"][i] for i in idx], [decisions[name][i] for i in idx]
            )
            referred = np.array([decisions[name][i].referral for i in idx])
            eye = referral_figures(referred, diseased)["eye"]
            entry[name] = {
                "largest_difference": max(
                    abs(a[c] - b[c]) for a, b in zip(base, mine, strict=True) for c in a
                ),
                "findings_changed": findings,
                "referrals_changed": referrals,
                "sensitivity": eye["sensitivity"],
                "specificity": eye["specificity"],
            }
        report[source] = entry
    for source, entry in report.items():
        seen = "never seen" if entry["never_seen"] else "includes training photographs"
        print(f"\n{source}: {entry['photographs']} photographs ({seen})")
        for name in decoders:
            f = entry[name]
            assert isinstance(f, dict)
            print(
                f"  {name:18s} max |dp| {f['largest_difference']:.4f}  findings changed "
                f"{f['findings_changed']:3d}  referrals changed {f['referrals_changed']:3d}  "
                f"sens {_figure(f['sensitivity'])}  spec {_figure(f['specificity'])}"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float))


def _figure(value: object) -> str:
    if isinstance(value, dict):
        return (
            f"{value['estimate']:.3f} ({value['low']:.3f}-{value['high']:.3f}; "
            f"{value['successes']}/{value['n']})"
        )
    return str(value)


if __name__ == "__main__":
    main()
