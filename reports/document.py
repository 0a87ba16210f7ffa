"""The human-readable report of a case: HTML from a jinja2 template, PDF by WeasyPrint.

Autoescaping is on and undefined names are errors: a patient called ``<b>Doe</b>`` is printed
as those characters, never as markup, and a missing value fails loudly instead of printing
nothing.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from PIL import Image

from services.reporting.content import CaseReport, ImageResult, RenderDocument

THUMBNAIL_PX = 640
_ENV = Environment(
    loader=PackageLoader("reports", "templates"),
    autoescape=select_autoescape(["html", "j2"], default=True),
    undefined=StrictUndefined,
)
EYES = {"R": "Right eye", "L": "Left eye", "B": "Both eyes", "": "Eye (laterality not given)"}


@dataclass(frozen=True)
class ImageView:
    eye: str
    photo: str  # data: URI
    heatmap: str | None
    result: ImageResult
    positives: list[tuple[int, str, float, float]]  # level, name, probability, threshold
    top3: list[str]
    not_assessed: list[str]  # names of the classes this model cannot assess
    quality: str  # the verdict in words, as the SR words it ("Not assessable by this model: …")


def _data_uri(rgb: np.ndarray) -> str:
    picture = Image.fromarray(rgb)
    picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _view(image: ImageResult, decode: Callable[[bytes], np.ndarray]) -> ImageView:
    names = {f.code: f.name for f in image.findings}
    heatmap = None
    if image.heatmap_path and Path(image.heatmap_path).exists():
        with Image.open(image.heatmap_path) as overlay:
            heatmap = _data_uri(np.asarray(overlay.convert("RGB")))
    return ImageView(
        eye=EYES.get(image.laterality, image.laterality),
        photo=_data_uri(decode(image.source)),
        heatmap=heatmap,
        result=image,
        positives=[
            (f.level, f.name, f.probability, f.threshold)
            for f in image.findings
            if f.positive and f.threshold is not None
        ],
        top3=[names.get(code, code) for code in image.top3],
        not_assessed=sorted({f.name for f in image.findings if not f.assessed}),
        quality=_quality_words(image.quality),
    )


def _quality_words(quality: str) -> str:
    from reports.sr import QUALITY_CODES
    from services.screening.quality import Quality

    try:
        return str(QUALITY_CODES[Quality(quality)].meaning)
    except ValueError:
        return quality


def render_html(content: CaseReport, decode: Callable[[bytes], np.ndarray]) -> str:
    template = _ENV.get_template("case_report.html.j2")
    return template.render(
        case=content,
        patient=content.patient,
        images=[_view(image, decode) for image in content.images],
        verdict=content.verdict,
        referral=content.referral,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def make_renderer(decode: Callable[[bytes], np.ndarray]) -> RenderDocument:
    """The ``RenderDocument`` of the report service: case content -> PDF bytes."""

    def render_pdf(content: CaseReport) -> bytes:
        from weasyprint import HTML  # heavy import, only where PDFs are made

        pdf = HTML(string=render_html(content, decode)).write_pdf()
        assert pdf is not None
        return bytes(pdf)

    return render_pdf
