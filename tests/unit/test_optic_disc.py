"""The optic disc locator: it finds the disc on generated photographs, not the bright centre of
the fundus's glow nor a flare on its rim, and crops a square around it."""

from __future__ import annotations

import numpy as np
import pytest

from ml.optic_disc import disc_crop, locate_disc
from ml.preprocess import crop_to_content
from tests.synthetic_photos import fundus_rgb

SIZE = 400
FRAME = 0.05


def _true_disc(seed: int) -> tuple[float, float]:
    """Where ``fundus_rgb`` draws the disc, as fractions of the cropped-to-content photo."""
    radius = SIZE * (0.5 - FRAME)
    x = SIZE / 2 + radius * 0.35 * (1 if seed % 2 else -1)
    lit = SIZE - 2 * round(SIZE * FRAME)  # the content box the frame leaves
    offset = (SIZE - lit) / 2
    return (x - offset) / lit, (SIZE / 2 - offset) / lit


@pytest.mark.parametrize("seed", range(6))
def test_the_disc_is_found_not_the_glow_at_the_centre(seed: int) -> None:
    fundus = crop_to_content(fundus_rgb(SIZE, seed=seed, frame=FRAME))
    x, y = locate_disc(fundus)
    true_x, true_y = _true_disc(seed)
    assert abs(x - true_x) < 0.05 and abs(y - true_y) < 0.05, (x, y, true_x, true_y)


def test_a_flare_on_the_rim_does_not_win() -> None:
    rgb = fundus_rgb(SIZE, seed=1, frame=FRAME)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    r = np.hypot(xx - SIZE / 2, yy - SIZE / 2) / (SIZE * (0.5 - FRAME))
    flare = (r > 0.93) & (r < 1.0) & (xx < SIZE / 2)  # a bright crescent on the far side
    rgb[flare] = (250, 250, 210)
    x, _ = locate_disc(crop_to_content(rgb))
    assert abs(x - _true_disc(1)[0]) < 0.05


def test_the_crop_is_a_square_around_the_disc_padded_where_it_runs_off() -> None:
    rgb = fundus_rgb(SIZE, seed=0, frame=FRAME)
    crop = disc_crop(rgb, crop_fraction=0.3)
    content = SIZE - 2 * round(SIZE * FRAME)
    assert crop.image.shape == (round(content * 0.3), round(content * 0.3), 3)
    middle = crop.image[
        crop.side // 2 - 3 : crop.side // 2 + 3, crop.side // 2 - 3 : crop.side // 2 + 3
    ]
    assert middle.mean(axis=(0, 1))[2] > 90  # the disc's pale yellow, not the orange fundus
    wide = disc_crop(rgb, crop_fraction=1.5)  # larger than the photograph: black padding
    assert wide.image[0, 0].tolist() == [0, 0, 0]


def test_a_black_image_gives_the_centre() -> None:
    assert locate_disc(np.zeros((100, 120, 3), np.uint8)) == (0.5, 0.5)
