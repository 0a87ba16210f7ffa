"""Photographs as the browser shows them. A JPEG-compressed photograph (what fundus cameras
send) goes out as the camera's own JPEG bitstream: the exact pixels, no decoding here. Anything
else is decoded once and sent as lossless PNG. The red-free view is the green channel (vessels
and haemorrhages stand out on it). Results are kept in a bounded in-memory cache, so J/K back
and forth and the panel's second look cost nothing."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.uid import JPEGBaseline8Bit

from dicom_gateway.pixels import decode_rgb
from ml.geometry import BOX_KEY, SquareBox, square_box

MAX_SIDE = 2048  # larger captures are scaled down for the screen; 1:1 up to this size
CACHE_BYTES = 256 * 2**20
BROWSER_JPEG = {JPEGBaseline8Bit}  # what every browser decodes as is (12-bit JPEG it does not)


class _Cache:
    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self.items: OrderedDict[tuple[str, str], tuple[bytes, str]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[bytes, str] | None:
        with self.lock:
            found = self.items.get(key)
            if found is not None:
                self.items.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], value: tuple[bytes, str]) -> None:
        with self.lock:
            if key in self.items or len(value[0]) > self.limit:
                return
            self.items[key] = value
            self.size += len(value[0])
            while self.size > self.limit:
                _, (data, _) = self.items.popitem(last=False)
                self.size -= len(data)


_cache = _Cache(CACHE_BYTES)


def for_browser(sha256: str, encoded: bytes, view: str) -> tuple[bytes, str]:
    """(image bytes, media type) of a stored photograph for the viewer."""
    key = (sha256, view)
    found = _cache.get(key)
    if found is None:
        found = _render(encoded, view)
        _cache.put(key, found)
    return found


def _render(encoded: bytes, view: str) -> tuple[bytes, str]:
    if view == "plain":
        jpeg = _camera_jpeg(encoded)
        if jpeg is not None:
            return jpeg, "image/jpeg"
    rgb = decode_rgb(encoded)
    if view == "redfree":
        picture = Image.fromarray(np.ascontiguousarray(rgb[..., 1]), mode="L")
    else:
        picture = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    if max(picture.size) > MAX_SIDE:
        picture.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    picture.save(out, format="PNG", compress_level=1)
    return out.getvalue(), "image/png"


def _camera_jpeg(encoded: bytes) -> bytes | None:
    """The first frame's JPEG bitstream when the data set carries baseline JPEG of a colour
    or monochrome photograph, else None."""
    try:
        ds = dcmread(io.BytesIO(encoded), force=True)
        if ds.file_meta.TransferSyntaxUID not in BROWSER_JPEG or "PixelData" not in ds:
            return None
        if str(ds.get("PhotometricInterpretation", "")) not in (
            "YBR_FULL_422",
            "YBR_FULL",
            "RGB",
            "MONOCHROME2",
        ):
            return None
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        frame = next(generate_frames(ds.PixelData, number_of_frames=frames))
        end = frame.rfind(b"\xff\xd9")  # DICOM pads an odd-length frame with a zero byte
        return frame[: end + 2] if frame[:2] == b"\xff\xd8" and end > 0 else None
    except Exception:  # anything odd: decode it ourselves instead
        return None


OVERLAY_SIDE = 1024  # the overlay is a guide, not a diagnostic image: this much is plenty


def heatmap_png(path: str, photo: Callable[[], bytes]) -> bytes:
    """A stored Grad-CAM (drawn on the network's square view) laid back on its photograph:
    an RGBA PNG with the photograph's aspect ratio, transparent where the network saw
    nothing, so the browser registers it by giving it the photograph's box. Where the square
    lies is read from the heatmap's own text chunk; for heatmaps made before it was written
    it is worked out from the photograph (``photo`` gives its stored bytes) the same way."""
    with Image.open(Path(path)) as picture:
        box_text = picture.info.get(BOX_KEY)
        heat = picture.convert("RGBA")
    box = SquareBox.from_text(box_text) if box_text else square_box(decode_rgb(photo()))
    scale = min(1.0, OVERLAY_SIDE / max(box.width, box.height))
    canvas = Image.new(
        "RGBA", (max(1, round(box.width * scale)), max(1, round(box.height * scale))), (0, 0, 0, 0)
    )
    side = max(1, round(box.side * scale))
    canvas.paste(
        heat.resize((side, side), Image.Resampling.BILINEAR),
        (round(box.x * scale), round(box.y * scale)),
    )
    out = io.BytesIO()
    canvas.save(out, format="PNG", compress_level=1)
    return out.getvalue()
