"""Grad-CAM overlays lie on the image the network saw (frame cropped, padded square), not on
the raw photograph stretched to a square (issue 14, defect 3)."""

import numpy as np
from PIL import Image

from ml.heatmaps import heatmap_overlay, model_view
from ml.predictor import SHIPPED_DIR, Predictor
from tests.synthetic_photos import fundus_rgb


def test_overlay_is_drawn_on_the_cropped_padded_square() -> None:
    predictor = Predictor.load(SHIPPED_DIR / "fundus.pt", "cpu")
    disc = fundus_rgb(400, seed=1, frame=0.3)  # a wide black frame around the disc
    photo = np.pad(disc, ((0, 0), (150, 150), (0, 0)))  # and a landscape sensor
    overlay = heatmap_overlay(predictor, photo, "F.GLAU.GLAU").astype(float)
    seen = model_view(predictor, photo).astype(float)
    size = predictor.preprocessing.size
    stretched = np.asarray(Image.fromarray(photo).resize((size, size))).astype(float)
    # show_cam_on_image blends half heatmap (never negative) with half the base image
    assert overlay.shape == seen.shape
    assert (overlay - 0.5 * seen).min() > -3  # the base is the network's view
    assert (overlay - 0.5 * stretched).min() < -20  # the old base would not fit
