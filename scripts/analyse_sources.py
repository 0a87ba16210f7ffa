"""Measurements on the per-photograph feature store, no training: the shipped model's referral
per source (it never saw Vietnam or Mexico), near-duplicate photographs under two patient
ids, the guard's firing rates, and the two confounds of fundus-external's README.

Usage: python scripts/analyse_sources.py STORE_DIR SHARED_DATA_DIR OUT_JSON
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ml.backbones import build_backbone
from ml.checkpoint import load_checkpoint
from ml.crossval import flat_levels
from ml.data import Sample
from ml.feature_store import FeatureStore
from ml.guard import fit_with_held_out_threshold
from ml.network import level_probabilities
from ml.operating_point import diseased_eyes, referral_figures
from ml.pipeline import load_samples
from ml.preprocess import Preprocessing
from services.screening.decision import OperatingPoint, decide
from services.taxonomy.tree import load_taxonomy


def shipped_referral(samples: list[Sample], features: np.ndarray) -> dict[str, Any]:
    """The shipped checkpoint's heads on the stored features (its backbone is ImageNet's in
    fp16; no flip TTA here), its calibration and operating point, referred by ``decide``."""
    meta, model = load_checkpoint(Path("ml/models/fundus.pt"))
    taxonomy = load_taxonomy("fundus")
    point = OperatingPoint.from_meta(meta)
    temps = meta["calibration"]["temperatures"]
    parents = [[]] + [taxonomy.parent_index(i) for i in range(2, taxonomy.depth + 1)]
    with torch.inference_mode():
        logits = model.heads.eval()(torch.from_numpy(features))
        probs = torch.cat(level_probabilities(logits, taxonomy.level_sizes(), parents), 1)
    raw = probs.numpy().clip(1e-6, 1 - 1e-6)
    t = np.array([temps.get(c, 1.0) for c in taxonomy.codes])
    calibrated = 1 / (1 + np.exp(-np.log(raw / (1 - raw)) / t))
    referred = np.array(
        [
            decide(taxonomy, dict(zip(taxonomy.codes, row, strict=True)), point).referral
            for row in calibrated
        ]
    )
    labels = flat_levels(
        [
            np.array([[c in s.codes for c in taxonomy.level_codes(lvl)] for s in samples], float)
            for lvl in (1, 2)
        ]
    )
    diseased = diseased_eyes(taxonomy, labels)
    sources = np.array([s.source for s in samples])
    out = {}
    for source in sorted(set(sources)):
        rows = sources == source
        out[source] = referral_figures(
            referred[rows],
            diseased[rows],
            [s.patient_id for s, r in zip(samples, rows, strict=True) if r],
        ) | {"samples": int(rows.sum())}
    return out


def near_duplicates(samples: list[Sample], features: np.ndarray) -> dict[str, Any]:
    """Pairs of photographs with feature cosine >= 0.98 under different patient ids."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    sims = unit @ unit.T
    rows, cols = np.nonzero(np.triu(sims >= 0.98, 1))
    pairs: dict[str, int] = {}
    normal_pairs = 0
    for r, c in zip(rows, cols, strict=True):
        a, b = samples[r], samples[c]
        if a.patient_id == b.patient_id:
            continue
        key = "/".join(sorted((a.source, b.source)))
        pairs[key] = pairs.get(key, 0) + 1
        normal_pairs += int("F.NOR" in a.codes or "F.NOR" in b.codes)
    return {
        "pairs_across_patient_ids": pairs,
        "of_which_with_a_normal_eye": normal_pairs,
        "photographs": len(samples),
    }


def brightness(path: Path) -> float:
    with Image.open(path) as image:
        grey = np.asarray(image.convert("L").reduce(4), np.float32)
    return float(grey.mean())


def mexico_confound(samples: list[Sample]) -> dict[str, Any]:
    """How well exposure and collection batch alone predict DME in the Mexican set."""
    from sklearn.metrics import roc_auc_score

    mx = [s for s in samples if s.source == "mexico_imo"]
    dme = np.array(["F.VRD.MAC" in s.codes for s in mx])
    light = np.array([brightness(s.path) for s in mx])
    number = np.array([int(s.patient_id.split("-")[1]) for s in mx])
    early = number < 1250
    return {
        "photographs": len(mx),
        "dme": int(dme.sum()),
        "auc_of_darkness_for_dme": float(roc_auc_score(dme, -light)),
        "auc_of_early_batch_for_dme": float(roc_auc_score(dme, early)),
        "dme_share_in_early_batch": float(dme[early].mean()),
        "dme_share_in_later_batch": float(dme[~early].mean()) if (~early).any() else None,
        "very_dark_share_dme": float((light[dme] < 20).mean()),
        "very_dark_share_no_dme": float((light[~dme] < 20).mean()),
    }


def vietnam_normals(samples: list[Sample], features: np.ndarray) -> dict[str, Any]:
    """Whether 'normal' can be learnt as 'that camera': how well a linear model tells the
    Vietnamese normals (another collection) from the other sources' normals, and from the
    Vietnamese diseased photographs, by backbone features alone (5-fold CV AUC)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    vn_normal = np.array([s.source == "cteh_vietnam" and "F.NOR" in s.codes for s in samples])
    other_normal = np.array([s.source != "cteh_vietnam" and "F.NOR" in s.codes for s in samples])
    vn_sick = np.array([s.source == "cteh_vietnam" and "F.NOR" not in s.codes for s in samples])

    def separable(a: np.ndarray, b: np.ndarray) -> float:
        rows = a | b
        model = LogisticRegression(C=0.1, max_iter=2000)
        p = cross_val_predict(model, features[rows], a[rows], cv=5, method="predict_proba")[:, 1]
        return float(roc_auc_score(a[rows], p))

    return {
        "vietnam_normals": int(vn_normal.sum()),
        "auc_vietnam_normal_vs_other_sources_normals": separable(vn_normal, other_normal),
        "auc_vietnam_normal_vs_vietnam_diseased": separable(vn_normal, vn_sick),
    }


def guard_rates(samples: list[Sample], features: np.ndarray, anterior: np.ndarray) -> dict:
    sources = np.array([s.source for s in samples])
    guard, facts = fit_with_held_out_threshold(features, sources)
    return facts | {
        "threshold": guard.threshold,
        "anterior_photographs_sent_as_fundus": len(anterior),
        "fired_on_anterior_sent_as_fundus": float(guard.unfamiliar(anterior).mean()),
        "fired_on_training_photographs": float(guard.unfamiliar(features).mean()),
    }


def shipped_guard_rates(
    samples: list[Sample], features: np.ndarray, anterior: np.ndarray
) -> dict[str, Any]:
    """The guard the shipped model 1.3 would carry: fitted on its own training sources only
    (``../fundus``); how often it fires on the two hospitals it never saw, and on anterior
    photos sent as fundus."""
    own = ("eyepacs", "odir", "retina_dataset")
    sources = np.array([s.source for s in samples])
    trained = np.isin(sources, own)
    guard, facts = fit_with_held_out_threshold(features[trained], sources[trained])
    return facts | {
        "threshold": guard.threshold,
        "fired_on": {
            src: float(guard.unfamiliar(features[sources == src]).mean())
            for src in sorted(set(sources) - set(own))
        },
        "fired_on_anterior_sent_as_fundus": float(guard.unfamiliar(anterior).mean()),
    }


def anterior_guard(store_dir: Path, shared: Path) -> dict[str, Any]:
    """The anterior model's guard (its backbone and pre-processing: Lite0, 224 px, no frame
    crop), thresholds on each anterior source held out; fired on fundus photos sent as
    anterior."""
    store = FeatureStore(
        store_dir,
        build_backbone("efficientnet_lite0", "imagenet"),
        Preprocessing(224, False),
        flips=False,
    )
    taxonomy = load_taxonomy("anterior")
    manifests = [
        shared / "anterior" / "manifest.csv",
        shared / "anterior-external" / "manifest.csv",
    ]
    samples = [s for s in load_samples(manifests, None, taxonomy) if s.path in store]
    with (shared / "fundus" / "manifest.csv").open(newline="") as handle:
        fundus = [shared / "fundus" / r["file"] for r in csv.DictReader(handle)]
    fundus = [p for p in fundus if p in store]
    features = store.get([s.path for s in samples])[0]
    sources = np.array([s.source for s in samples])
    guard, facts = fit_with_held_out_threshold(features, sources)
    return facts | {
        "threshold": guard.threshold,
        "anterior_photographs": len(samples),
        "fundus_photographs_sent_as_anterior": len(fundus),
        "fired_on_fundus_sent_as_anterior": float(guard.unfamiliar(store.get(fundus)[0]).mean()),
    }


def anterior_paths(shared: Path) -> list[Path]:
    paths = []
    for name in ("anterior", "anterior-external"):
        with (shared / name / "manifest.csv").open(newline="") as handle:
            paths += [shared / name / row["file"] for row in csv.DictReader(handle)]
    return paths


def main(store_dir: str, shared_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    shared = Path(shared_dir)
    taxonomy = load_taxonomy("fundus")
    store = FeatureStore(
        Path(store_dir),
        build_backbone("efficientnet_lite2", "imagenet"),
        Preprocessing(320, True),
        flips=False,
    )
    manifests = [shared / "fundus" / "manifest.csv", shared / "fundus-external" / "manifest.csv"]
    every = load_samples(manifests, None, taxonomy)
    samples = [s for s in every if s.path in store]
    features = store.get([s.path for s in samples])[0]
    anterior = [p for p in anterior_paths(shared) if p in store]
    result = {
        "stored_photographs": len(samples),
        "of_photographs": len(every),
        "per_source": {
            src: sum(s.source == src for s in samples) for src in sorted({s.source for s in every})
        },
        "shipped_model_referral_per_source": shipped_referral(samples, features),
        "near_duplicates": near_duplicates(samples, features),
        "guard": guard_rates(samples, features, store.get(anterior)[0]),
        "guard_of_the_shipped_model": shipped_guard_rates(
            samples, features, store.get(anterior)[0]
        ),
        "mexico_exposure_and_batch": mexico_confound(
            [s for s in every if s.source == "mexico_imo"]
        ),
        "vietnam_normals": vietnam_normals(samples, features),
        "anterior_guard": anterior_guard(Path(store_dir), shared),
    }
    Path(out).write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main(*sys.argv[1:])
