"""The model registry: which checkpoints the service knows, and which one reads each route at
each site. Activation history is kept (rollback = activate the previous model again).

Checkpoint files are copied into the data folder under their sha256, read-only, so the file a
prediction names can never change underneath it. Loading and checking a checkpoint is the
caller's job (it needs torch); this module is plain database work.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.models import ModelActivation, ModelVersion
from services.kernel.errors import ModelNotFound


@dataclass(frozen=True)
class CheckpointFacts:
    """What the caller read from a checkpoint file it has verified loads."""

    name: str
    version: str
    route: str
    taxonomy_version: str
    sha256: str


def register(
    session: Session, source: Path, facts: CheckpointFacts, models_dir: Path
) -> ModelVersion:
    """Copy the checkpoint in under its hash and record it; registering twice is harmless."""
    existing = session.scalar(
        select(ModelVersion).where(ModelVersion.weights_sha256 == facts.sha256)
    )
    if existing is not None:
        return existing
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / f"{facts.sha256}.pt"
    if not target.exists():
        partial = target.with_suffix(".partial")
        shutil.copyfile(source, partial)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        partial.chmod(0o444)
        partial.replace(target)
    row = ModelVersion(
        name=facts.name,
        version=facts.version,
        route=facts.route,
        weights_sha256=facts.sha256,
        taxonomy_version=facts.taxonomy_version,
        path=str(target),
    )
    session.add(row)
    session.flush()
    return row


def find(session: Session, sha256_prefix: str) -> ModelVersion:
    """The registered model whose weights hash starts with the prefix (unique)."""
    matches = session.scalars(
        select(ModelVersion).where(ModelVersion.weights_sha256.startswith(sha256_prefix.lower()))
    ).all()
    if len(matches) != 1:
        found = "no model" if not matches else f"{len(matches)} models"
        raise ModelNotFound(f"{found} with a sha256 starting {sha256_prefix!r}")
    return matches[0]


def activate(
    session: Session, model: ModelVersion, site: str = "", by: str = ""
) -> ModelActivation:
    """Make a model the one its route uses (at a site, or everywhere); audited."""
    activation = ModelActivation(
        route=model.route, site=site, model_version_pk=model.id, activated_by=by[:64]
    )
    session.add(activation)
    session.flush()
    return activation


def active(session: Session, route: str, site: str = "") -> ModelVersion | None:
    """The model activated last for this site, else for every site; None: use the default."""
    for candidate_site in dict.fromkeys((site, "")):
        activation = session.scalar(
            select(ModelActivation)
            .where(ModelActivation.route == route, ModelActivation.site == candidate_site)
            .order_by(ModelActivation.id.desc())
        )
        if activation is not None:
            return activation.model_version
    return None
