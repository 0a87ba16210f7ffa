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


def _marked_photo() -> np.ndarray:
    """A landscape photo with a wide black frame and one white mark at (x 380, y 150)."""
    disc = fundus_rgb(400, seed=2, frame=0.15)
    photo = np.pad(disc, ((0, 0), (150, 150), (0, 0))).copy()  # 700 wide, 400 high
    photo[145:156, 375:386] = 255
    return photo


def _mark_of(png: bytes, width: int) -> tuple[float, float]:
    """Where the white mark lies on the overlay, in the photograph's pixels."""
    import io

    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA")).astype(int)
    scale = width / picture.shape[1]
    ys, xs = np.nonzero(picture[..., :3].min(axis=2) > 240)
    return xs.mean() * scale, ys.mean() * scale


def test_the_web_viewers_overlay_lies_on_the_photograph(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 21: the 320 px view was drawn at its natural size over the photo, so its hot
    spots landed in the wrong place. Laid back on the photo, a mark lands where it is."""
    from PIL.PngImagePlugin import PngInfo

    from ml.geometry import BOX_KEY, square_box
    from ml.preprocess import Preprocessing, to_square_image
    from tests.dicom_files import encode
    from webapp.images import heatmap_png

    photo = _marked_photo()
    view = to_square_image(photo, Preprocessing(size=320))
    info = PngInfo()
    info.add_text(BOX_KEY, square_box(photo).to_text())
    with_box, without_box = tmp_path / "with.png", tmp_path / "without.png"
    view.save(with_box, pnginfo=info)
    view.save(without_box)
    source = tmp_path / "photo.png"
    Image.fromarray(photo).save(source)

    from dicom_gateway.photos import photo_to_dataset

    encoded = encode(photo_to_dataset(source))
    for path in (with_box, without_box):
        png = heatmap_png(str(path), lambda: encoded)
        with Image.open(__import__("io").BytesIO(png)) as overlay:
            assert overlay.size[0] * 400 == overlay.size[1] * 700  # the photo's aspect
        x, y = _mark_of(png, 700)
        assert abs(x - 380) < 3 and abs(y - 150) < 3, (path.name, x, y)


def test_heatmaps_say_where_they_lie_on_the_photograph(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ml.geometry import BOX_KEY, SquareBox, square_box
    from ml.heatmaps import HeatmapMaker

    predictor = Predictor.load(SHIPPED_DIR / "fundus.pt", "cpu")
    photo = _marked_photo()
    path = HeatmapMaker(tmp_path)(predictor, photo, ["F.GLAU.GLAU"])
    assert path is not None
    with Image.open(path) as saved:
        box = SquareBox.from_text(saved.info[BOX_KEY])
    assert box == square_box(photo) and (box.width, box.height) == (700, 400)
    assert box.side < 400  # the frame was cut (a fundus model crops it)
