"""The image-quality gate on synthetic extremes and on real photographs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from services.screening.quality import GRADABLE, assess, image_statistics
from tests.conftest import ANTERIOR, FUNDUS, needs_shared_data


def disc(level: float, texture: float = 30.0, size: int = 256) -> np.ndarray:
    """A lit disc on black, as a fundus camera gives, with random texture."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.45) ** 2
    image = np.clip(level + rng.normal(0, texture, (size, size)), 0, 255) * inside
    return np.repeat(image[..., None], 3, axis=2).astype(np.uint8)


def blurred(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(12)))


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.zeros((256, 256, 3), np.uint8), "ungradable:empty"),
        (disc(18, texture=2), "ungradable:dark"),
        (disc(252, texture=1), "ungradable:overexposed"),
        (blurred(disc(120)), "ungradable:blurred"),
        (disc(120), GRADABLE),
    ],
)
def test_synthetic_extremes(image: np.ndarray, expected: str) -> None:
    assert assess(image, "fundus") == expected


def test_a_cornea_photo_routed_as_fundus_is_refused_and_statistics_describe_it() -> None:
    needs_shared_data()
    fundus = np.asarray(Image.open(FUNDUS / "images" / "cataract" / "0_left.jpg").convert("RGB"))
    assert assess(fundus, "fundus") == GRADABLE
    cornea_files = sorted((ANTERIOR / "images").rglob("*.jp*g"))
    refused = [
        assess(np.asarray(Image.open(p).convert("RGB")), "fundus") == "ungradable:not_fundus"
        for p in cornea_files
    ]
    assert np.mean(refused) > 0.7
    stats = image_statistics(fundus)
    assert 20 < stats["brightness"] < 240 and stats["sharpness"] > 2 and stats["red_green"] > 1


def test_every_verdict_has_its_own_defined_sr_code() -> None:
    """SR codes are defined per verdict (DICOM SH: at most 16 characters), never cut from text."""
    from reports.sr import QUALITY_CODES
    from services.screening.quality import Quality

    assert set(QUALITY_CODES) == set(Quality)
    values = [code.value for code in QUALITY_CODES.values()]
    assert len(set(values)) == len(values) and all(len(v) <= 16 for v in values)
    assert QUALITY_CODES[Quality.NO_TRAINED_MODEL].meaning.endswith("no trained model for it")


def test_an_unfamiliar_photograph_says_why_in_the_sr() -> None:
    from reports.sr import QUALITY_CODES
    from services.screening.quality import Quality

    meaning = QUALITY_CODES[Quality.UNFAMILIAR].meaning
    assert meaning.startswith("Not assessable by this model")


def test_the_index_test_results_count_eyes_not_assessable_by_the_model() -> None:
    from services.study.records import EyeRecord
    from services.study.tables.flow import index_results

    def eye(unfamiliar: bool, gradable: bool) -> EyeRecord:
        return EyeRecord(
            case_key="c", patient_key="p", eye="R", site="s", camera="cam", route="fundus",
            model_version="m 1", age_band="", sex="", study_day=0, model_gradable=gradable,
            model_codes=set(), model_referral=True, probabilities={}, thresholds={}, top3=[],
            model_unfamiliar=unfamiliar,
        )  # fmt: skip

    [model] = index_results([eye(True, False), eye(False, True), eye(False, False)])
    assert (model["reader"], model["eyes"], model["positive"]) == ("model", 3, 1)
    assert (model["indeterminate"], model["indeterminate_not_assessable"]) == (2, 1)
