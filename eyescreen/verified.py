"""A site's verified photographs as training samples (``eyescreen train --include-verified``).

Verified means what recalibration uses: the panel's signed decision, or a concordant grader read
the triage accepted; eyes still with the panel, ungradable ones and those without a reference
are left out. Each gradable photograph of such an eye is decoded as the worker decodes it and
written once, losslessly, to the training cache (PNG named by its content hash), so that the
training set reads the pixels the served model read. Patient keys are the study's pseudonyms,
prefixed by the site, so a site's patient never shares a fold key with a manifest's patient id.
"""

from __future__ import annotations

import getpass
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from dicom_gateway.pixels import UndecodableImage, decode_rgb
from ml.data import Sample
from services.db.models import AuditEvent
from services.db.session import transaction
from services.kernel.settings import Settings
from services.kernel.storage import ContentStore
from services.study.records import (
    VERIFIED,
    Filters,
    ReferenceRoute,
    gather,
    reference_labels,
    study_key,
)
from services.taxonomy.tree import Taxonomy

log = logging.getLogger(__name__)

ACCEPTED = frozenset(VERIFIED) | {ReferenceRoute.CONCORDANT}


def verified_samples(
    settings: Settings,
    sessions: sessionmaker[Session],
    site: str,
    route: str,
    taxonomy: Taxonomy,
    folder: Path,
) -> list[Sample]:
    """The site's verified eyes of ``route``, one sample per gradable photograph."""
    key = study_key(settings.study_key_file or settings.data_path / "study.key")
    with sessions() as session:
        records = gather(session, Filters(sites=(site,), routes=(route,)), key)
    store = ContentStore(settings.images_dir)
    folder.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = []
    unreadable = 0
    for record in records:
        if record.reference_route not in ACCEPTED or record.reference is None:
            continue
        codes = frozenset(reference_labels(record.reference, taxonomy))
        for sha256 in record.photographs:
            path = folder / f"{sha256}.png"
            if not path.exists() and not _write_decoded(store, sha256, path):
                unreadable += 1
                continue
            samples.append(
                Sample(
                    path=path,
                    patient_id=f"{site}:{record.patient_key}",
                    eye=record.eye,
                    codes=codes,
                    source=f"site:{site}",
                    note=record.reference_route.value,
                )
            )
    with transaction(sessions) as session:
        session.add(
            AuditEvent(
                action="model.train.include_verified",
                detail={"site": site, "route": route, "photographs": len(samples),
                        "unreadable": unreadable, "by": getpass.getuser()},
            )
        )  # fmt: skip
    if unreadable:
        log.warning("%d verified photographs of site %s could not be read", unreadable, site)
    return samples


def _write_decoded(store: ContentStore, sha256: str, path: Path) -> bool:
    try:
        pixels: np.ndarray = decode_rgb(store.read(sha256))
    except (OSError, UndecodableImage):
        return False
    partial = path.with_name(f".partial-{path.name}")
    Image.fromarray(pixels).save(partial, "PNG")
    partial.replace(path)
    return True
