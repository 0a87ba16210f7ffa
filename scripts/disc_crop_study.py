"""Would a reading of the optic disc at a higher resolution find the glaucoma the model misses?

A feasibility study, not a model: the shipped fundus model's own backbone reads a crop around
the optic disc (``ml.optic_disc``) of every photograph; a logistic regression on those features
learns glaucoma on the patients 1.4 was trained on (the same seeded 85 % split), and is judged
on the 925 held-out eyes of 748 patients beside 1.4's own glaucoma probability and 1.4's
referral. Nothing here changes what the service decides.

    python scripts/disc_crop_study.py contact-sheet --out runs/disc/crops.png
    python scripts/disc_crop_study.py features --out runs/disc/features.npz
    python scripts/disc_crop_study.py judge runs/disc/features.npz --out runs/disc/judged.json

Reads ``../shared`` (or ``EYESCREEN_SHARED``). About 15 min for the features on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.data import Sample, held_out_patients
from ml.optic_disc import disc_crop
from ml.paired_referral import eye_label
from ml.pipeline import load_samples
from ml.predictor import Predictor
from ml.preprocess import load_rgb, prepare
from services.taxonomy.tree import load_taxonomy

GLAUCOMA = "F.GLAU.GLAU"
REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "ml" / "models" / "fundus.pt"
REFERRALS_1_4 = REPO / "docs" / "model-fundus" / "held-out-1.4" / "referrals" / "1.4.csv"
BUDGETS = (0.02, 0.05)  # share of normal training eyes (out of fold) the disc reader may flag
log = logging.getLogger("disc_crop_study")


def _split(manifests: list[Path] | None = None) -> tuple[list[Sample], list[Sample]]:
    """1.4's split (--hold-out 0.15, seed 0) of the photographs' manifests, or of manifests
    with the same rows (the crops')."""
    if manifests is None:
        shared = Path(os.environ.get("EYESCREEN_SHARED", "../shared"))
        manifests = [
            shared / "data" / "fundus" / "manifest.csv",
            shared / "data" / "fundus-external" / "manifest.csv",
        ]
    samples = load_samples(manifests, None, load_taxonomy("fundus"))
    return held_out_patients(samples, 0.15, 0)


def contact_sheet(out: Path, count: int = 48) -> None:
    """Random crops of every source side by side: does the locator find the disc?"""
    trained, held = _split()
    everyone = trained + held
    rng = np.random.default_rng(1)
    chosen = [everyone[i] for i in rng.choice(len(everyone), count, replace=False)]
    tile = 160
    columns = 8
    sheet = Image.new("RGB", (columns * tile, -(-count // columns) * tile))
    for i, sample in enumerate(tqdm(chosen, desc="crops")):
        crop = disc_crop(load_rgb(sample.path)).image
        image = Image.fromarray(crop).resize((tile, tile))
        sheet.paste(image, ((i % columns) * tile, (i // columns) * tile))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(out)


def write_crops(out_dir: Path, longest: int = 640) -> None:
    """Every photograph's disc crop as a JPEG, and each manifest again with its rows pointing
    at the crops (all other columns as they were), so that ``eyescreen train-last-block``
    trains 1.4's recipe, split and seed on the discs alone."""
    import csv

    shared = Path(os.environ.get("EYESCREEN_SHARED", "../shared"))
    for name in ("fundus", "fundus-external"):
        manifest = shared / "data" / name / "manifest.csv"
        with manifest.open(newline="") as handle:
            reader = csv.DictReader(handle)
            fields, rows = list(reader.fieldnames or []), list(reader)
        folder = (out_dir / name).resolve()
        for row in tqdm(rows, desc=f"{name} crops", mininterval=10):
            target = folder / Path(row["file"]).with_suffix(".jpg")
            if not target.exists():
                crop = Image.fromarray(
                    disc_crop(load_rgb(str(manifest.parent / row["file"]))).image
                )
                crop.thumbnail((longest, longest))
                target.parent.mkdir(parents=True, exist_ok=True)
                crop.save(target, quality=95)
            row["file"] = str(target)
        with (out_dir / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fields)
            writer.writeheader()
            writer.writerows(rows)
    print(out_dir)


@torch.inference_mode()
def features(out: Path, batch: int = 16) -> None:
    """Per photograph: the backbone's features of its disc crop; and for held-out photographs
    1.4's calibrated glaucoma probability of the whole photograph, as the service reads it."""
    torch.set_num_threads(2)
    trained, held = _split()
    everyone = trained + held
    predictor = Predictor.load(SHIPPED, device="cpu")
    normal_codes = {n.code for n in predictor.taxonomy.nodes if n.normal}
    spec = predictor.preprocessing
    backbone = predictor.model.backbone.eval()
    crops: list[np.ndarray] = []
    whole: list[float] = []
    held_paths = {s.path for s in held}
    pending: list[Sample] = []

    def flush() -> None:
        rgbs = [load_rgb(s.path) for s in pending]
        views = torch.stack([prepare(disc_crop(rgb).image, spec) for rgb in rgbs])
        crops.append(backbone(views).float().numpy())
        for sample, rgb in zip(pending, rgbs, strict=True):
            if sample.path in held_paths:
                whole.append(predictor.predict([rgb])[0][GLAUCOMA])
            else:
                whole.append(float("nan"))
        pending.clear()

    for sample in tqdm(everyone, desc="disc features", mininterval=10):
        pending.append(sample)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        features=np.concatenate(crops),
        whole_glaucoma=np.array(whole),
        held_out=np.array([s.path in held_paths for s in everyone]),
        glaucoma=np.array([GLAUCOMA in s.codes for s in everyone]),
        normal=np.array([s.codes <= normal_codes for s in everyone]),
        source=np.array([s.source for s in everyone]),
        patient=np.array([s.patient_id for s in everyone]),
        photograph=np.array([s.path.name for s in everyone]),
        eye=np.array([eye_label(s) for s in everyone]),
    )
    print(out)


def _auc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if truth.all() or not truth.any():
        return None
    return round(float(roc_auc_score(truth, scores)), 3)


def _aucs(scores: np.ndarray, truth: np.ndarray, source: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"pooled": _auc(scores, truth)}
    for name in np.unique(source):
        rows = source == name
        out[str(name)] = {
            "auc": _auc(scores[rows], truth[rows]),
            "glaucoma": int(truth[rows].sum()),
        }
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def linear_reader(data: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A logistic regression on 1.4's backbone features of the disc crop: out of fold on the
    training patients (5 patient-grouped folds, the regularisation chosen there), then fitted
    on them all and read on the held-out eyes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, truth, held = data["features"], data["glaucoma"], data["held_out"]
    train = ~held

    def reader(c: float) -> Any:
        return make_pipeline(
            StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        )

    groups = np.array([f"{s}/{p}" for s, p in zip(data["source"], data["patient"], strict=True)])
    oof: dict[float, np.ndarray] = {}
    for c in (0.001, 0.01, 0.1):
        scores = np.zeros(int(train.sum()))
        for fit, test in GroupKFold(5).split(x[train], truth[train], groups[train]):
            model = reader(c).fit(x[train][fit], truth[train][fit])
            scores[test] = model.predict_proba(x[train][test])[:, 1]
        oof[c] = scores
        log.info("C %s: out-of-fold glaucoma AUC %s", c, _auc(scores, truth[train]))
    best = max(oof, key=lambda c: _auc(oof[c], truth[train]) or 0.0)
    held_scores = reader(best).fit(x[train], truth[train]).predict_proba(x[held])[:, 1]
    return oof[best], held_scores, {"reader": "logistic regression", "regularisation_C": best}


@torch.inference_mode()
def model_reader(
    data: Any, checkpoint: Path, crops_dir: Path
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A network trained on the disc crops alone (``train-last-block`` on the crop manifests):
    its calibrated glaucoma probability out of fold (the run's ``.oof.npz``) and on the
    held-out crops."""
    from ml.oof_file import load_out_of_fold

    taxonomy = load_taxonomy("fundus")
    trained, held = _split([crops_dir / "fundus.csv", crops_dir / "fundus-external.csv"])
    held_mask = data["held_out"]
    if [s.patient_id for s in held] != [str(p) for p in data["patient"][held_mask]]:
        raise ValueError("the crops' split is not the photographs' split")
    predictor = Predictor.load(checkpoint, device="cpu")
    temperature = float(predictor.meta["calibration"]["temperatures"][GLAUCOMA])
    oof = load_out_of_fold(checkpoint.with_suffix(".oof.npz"), taxonomy)
    if len(oof.patients) != len(trained):
        raise ValueError("the out-of-fold file is not of the crops' training patients")
    raw = np.clip(oof.raw[:, list(oof.codes).index(GLAUCOMA)], 1e-6, 1 - 1e-6)
    oof_scores = 1 / (1 + np.exp(-_logit(raw) / temperature))
    held_scores = []
    for start in tqdm(range(0, len(held), 16), desc="held-out crops", mininterval=10):
        batch = [load_rgb(str(s.path)) for s in held[start : start + 16]]
        held_scores += [row[GLAUCOMA] for row in predictor.predict(batch)]
    about = {"reader": f"network {predictor.version} on disc crops", "checkpoint": checkpoint.name}
    return oof_scores, np.array(held_scores), about


def _write_referrals(path: Path, base: Path, referred: np.ndarray) -> None:
    """1.4's referrals file with the combined rule's referral in place of 1.4's (rows in the
    same order), so that the paired figures can be checked with other tools (R)."""
    import csv

    with base.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = list(reader.fieldnames or []), list(reader)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        for row, sent in zip(rows, referred, strict=True):
            writer.writerow(row | {"referred": int(sent)})


def judge_study(
    features_file: Path,
    referrals: Path,
    out: Path,
    disc_model: Path | None = None,
    crops_dir: Path | None = None,
) -> None:
    """Out of fold on the training patients, then the held-out eyes: glaucoma AUCs of the
    disc reader, of 1.4, and of the two together; and 1.4's referral with "or the disc reader
    flags glaucoma" added, paired against 1.4 on the same eyes."""
    from ml.operating_point import referral_figures
    from ml.paired_referral import Referrals, compare, markdown, read_referrals

    data = np.load(features_file)
    truth, held = data["glaucoma"], data["held_out"]
    source, patient = data["source"], data["patient"]
    train = ~held
    if disc_model is None:
        oof_scores, disc, about = linear_reader(data)
    else:
        oof_scores, disc, about = model_reader(data, disc_model, crops_dir or Path("."))
    whole = data["whole_glaucoma"][held]
    together = 1 / (1 + np.exp(-(_logit(disc) + _logit(whole)) / 2))
    normal_train = data["normal"][train]
    result: dict[str, Any] = {
        **about,
        "training_eyes": int(train.sum()),
        "training_glaucoma": int(truth[train].sum()),
        "out_of_fold_auc": _aucs(oof_scores, truth[train], source[train]),
        "held_out_auc": {
            "disc_reader": _aucs(disc, truth[held], source[held]),
            "model_1.4_whole_photograph": _aucs(whole, truth[held], source[held]),
            "mean_logit_of_both": _aucs(together, truth[held], source[held]),
        },
        "added_to_the_referral": {},
    }
    base = read_referrals(referrals)
    keys = [
        (str(s), str(p), str(e), str(f))
        for s, p, e, f in zip(
            source[held], patient[held], data["eye"][held], data["photograph"][held], strict=True
        )
    ]
    index = {k: i for i, k in enumerate(keys)}
    order = np.array([index[k] for k in base.keys])
    reports = []
    for budget in BUDGETS:
        cut = float(np.quantile(oof_scores[normal_train], 1 - budget))
        flagged = disc[order] >= cut
        referred = base.referred | flagged
        variant = Referrals(base.keys, base.diseased, referred)
        name = f"{out.stem}-referrals-{round(budget * 100)}pct.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_referrals(out.with_name(name), referrals, referred)
        patients = [f"{k[0]}/{k[1]}" for k in base.keys]
        by_source = {}
        for name in sorted({k[0] for k in base.keys}):
            rows = np.array([k[0] == name for k in base.keys])
            by_source[name] = referral_figures(
                referred[rows],
                base.diseased[rows],
                [p for p, r in zip(patients, rows, strict=True) if r],
            )
        result["added_to_the_referral"][f"flags {budget:.0%} of normal training eyes"] = {
            "cut": round(cut, 4),
            "eyes_flagged": int(flagged.sum()),
            "flagged_not_referred_by_1.4": int((flagged & ~base.referred).sum()),
            "pooled": referral_figures(referred, base.diseased, patients),
            "by_source": by_source,
            "paired_with_1.4": compare(variant, base),
        }
        reports.append(
            f"## 1.4 or the disc reader (cut {cut:.3f}: {budget:.0%} of normal training eyes)"
            + "\n\n"
            + markdown(compare(variant, base), "1.4 + disc", "1.4")
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n\n".join(reports) + "\n")
    print(json.dumps(result["held_out_auc"], indent=2))
    print(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sheet = commands.add_parser("contact-sheet")
    sheet.add_argument("--out", type=Path, required=True)
    feats = commands.add_parser("features")
    feats.add_argument("--out", type=Path, required=True)
    crops = commands.add_parser("crops")
    crops.add_argument("--out-dir", type=Path, required=True)
    judge = commands.add_parser("judge")
    judge.add_argument("features", type=Path)
    judge.add_argument("--referrals", type=Path)
    judge.add_argument("--out", type=Path, required=True)
    judge.add_argument("--disc-model", type=Path, help="a checkpoint trained on the crops")
    judge.add_argument("--crops-dir", type=Path, help="where `crops` wrote them")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    if args.command == "contact-sheet":
        contact_sheet(args.out)
    elif args.command == "crops":
        write_crops(args.out_dir)
    elif args.command == "features":
        features(args.out)
    else:
        judge_study(
            args.features,
            args.referrals or REFERRALS_1_4,
            args.out,
            args.disc_model,
            args.crops_dir,
        )


if __name__ == "__main__":
    main()
