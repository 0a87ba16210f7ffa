"""Drift watch: does each camera still send what the model was validated on?

For every (site, camera, route) the latest predictions' image statistics (brightness, contrast,
sharpness, colour balance) and top-level probabilities are compared with the same quantities
on the model's validation photographs, by the population stability index (PSI) over the
reference's deciles. PSI above 0.25 is the usual "shifted" mark: a camera changed, its settings
changed, or the population differs from the one the model was validated on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.models import Instance, ModelVersion, Prediction

IMAGE_FEATURES = ("brightness", "contrast", "sharpness", "red_green")
FORMAT = "eyescreen-drift-reference/1"


@dataclass(frozen=True)
class Reference:
    """Decile edges of each feature on the model's validation photographs."""

    model_sha256: str
    route: str
    edges: dict[str, list[float]]
    count: int

    @classmethod
    def from_samples(
        cls, model_sha256: str, route: str, samples: Iterable[Mapping[str, float]]
    ) -> Reference:
        """Decile edges of each feature over the reference photographs."""
        rows = list(samples)
        if len(rows) < 20:
            raise ValueError(f"a reference needs at least 20 photographs, got {len(rows)}")
        edges = {
            name: np.quantile([r[name] for r in rows], np.linspace(0.1, 0.9, 9)).tolist()
            for name in rows[0]
        }
        return cls(model_sha256, route, edges, len(rows))

    def save(self, path: Path) -> None:
        """Write the reference as JSON beside its model."""
        data = {"format": FORMAT, **self.__dict__}
        path.write_text(json.dumps(data, indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> Reference:
        """Read a reference written by ``save``."""
        data = json.loads(path.read_text())
        if data.pop("format", None) != FORMAT:
            raise ValueError(f"{path}: not a drift reference")
        return cls(**data)


def features(
    probabilities: Mapping[str, float], image: Mapping[str, float], top: list[str]
) -> dict[str, float]:
    """The quantities watched for one prediction: image statistics and top-level probabilities."""
    values = {name: float(image.get(name, 0.0)) for name in IMAGE_FEATURES}
    values.update({f"p:{code}": float(probabilities.get(code, 0.0)) for code in top})
    return values


def psi(values: list[float], edges: list[float]) -> float:
    """Population stability index of ``values`` against ten reference bins of 10 % each."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    observed = np.clip(counts / max(len(values), 1), 1e-4, None)
    expected = 1.0 / (len(edges) + 1)
    return float(np.sum((observed - expected) * np.log(observed / expected)))


@dataclass(frozen=True)
class DriftRow:
    """One camera's population stability index per feature against the reference."""

    camera: str
    route: str
    count: int
    scores: dict[str, float]  # feature -> PSI
    threshold: float

    @property
    def drifted(self) -> list[str]:
        """The features whose PSI is above the threshold."""
        return [name for name, score in self.scores.items() if score > self.threshold]


def check(
    session: Session,
    reference: Reference,
    window: int = 200,
    min_count: int = 50,
    threshold: float = 0.25,
) -> list[DriftRow]:
    """PSI per camera (calling AE title) over its latest ``window`` predictions by the
    reference's model; cameras with fewer than ``min_count`` are not judged yet."""
    rows = session.execute(
        select(Instance.calling_ae, Prediction.probabilities, Prediction.provenance)
        .join(Prediction, Prediction.instance_pk == Instance.id)
        .join(ModelVersion, ModelVersion.id == Prediction.model_version_pk)
        .where(ModelVersion.weights_sha256 == reference.model_sha256)
        .order_by(Prediction.id.desc())
    )
    top = [name[2:] for name in reference.edges if name.startswith("p:")]
    per_camera: dict[str, list[dict[str, float]]] = {}
    for camera, probabilities, provenance in rows:
        recent = per_camera.setdefault(camera or "(unknown)", [])
        if len(recent) < window and "image" in provenance:
            recent.append(features(probabilities, provenance["image"], top))
    report = []
    for camera, samples in sorted(per_camera.items()):
        if len(samples) < min_count:
            continue
        scores = {
            name: round(psi([s[name] for s in samples], edges), 4)
            for name, edges in reference.edges.items()
            if not math.isnan(edges[0])
        }
        report.append(DriftRow(camera, reference.route, len(samples), scores, threshold))
    return report
