"""Inference as pre-process -> predict -> (post-process in services.screening.decision)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.checkpoint import build_model, load_checkpoint, make_meta, save_checkpoint
from ml.guard import Guard
from ml.network import ScreeningNet, level_probabilities
from ml.preprocess import Preprocessing, prepare, prepare_tensor
from services.kernel.storage import file_sha256
from services.screening.decision import ModelRead, OperatingPoint, ProbabilityScale
from services.taxonomy.tree import Taxonomy, load_taxonomy, parse_taxonomy

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).parent / "models"


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_precision(requested: str, device: torch.device) -> str:
    """``auto``: fp32, the precision the operating point was chosen in, on any device.

    bf16 is 2-6 times faster on a CPU with native bf16 (bench/inference.py) but moves
    probabilities by up to 0.06: it turned a normal photograph into a glaucoma referral on a
    CPU, and changed 3 of 160 referrals on an H200 (bench/precision_agreement.py). fp16 on the
    H200 changed none, but served photographs more slowly than fp32 (51 against 90 images/s:
    serving is bound by decoding and resizing, not by the network). So a lower precision is
    only ever asked for, after re-validating the operating point with it."""
    del device  # the same answer everywhere: kept for callers that pass the device
    if requested != "auto":
        return requested
    return "fp32"


_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Predictor:
    meta: dict[str, Any]
    model: ScreeningNet
    sha256: str
    path: Path
    device: torch.device
    precision: str = "fp32"  # fp32, or bf16 / fp16 autocast with channels_last
    compiled: bool = False
    taxonomy: Taxonomy = field(init=False)
    preprocessing: Preprocessing = field(init=False)

    def __post_init__(self) -> None:
        self.taxonomy = parse_taxonomy(self.meta["taxonomy"])
        self.preprocessing = Preprocessing.from_dict(self.meta["preprocessing"])
        self.model.to(self.device).eval()
        if self.precision != "fp32":
            self.model.to(memory_format=torch.channels_last)
        self._level_sizes = self.taxonomy.level_sizes()
        self._parents: list[list[int]] = [[]] + [
            self.taxonomy.parent_index(i) for i in range(2, self.taxonomy.depth + 1)
        ]
        self.operating_point = OperatingPoint.from_meta(self.meta)
        temperatures = (self.meta.get("calibration") or {}).get("temperatures") or {}
        if self.operating_point.scale == ProbabilityScale.CALIBRATED:
            # Calibrated probabilities: sigmoid(logit(p) / T) per class, T fitted out of fold.
            self._temperatures = torch.tensor(
                [float(temperatures.get(c, 1.0)) for c in self.taxonomy.codes]
            )
        else:
            self._temperatures = torch.ones(len(self.taxonomy.codes))
        self.flip_tta = bool((self.meta.get("inference") or {}).get("flip_tta", False))
        guard = self.meta.get("guard")
        self.guard = Guard.from_meta(guard) if guard else None

    @classmethod
    def load(cls, path: Path, device: str = "auto", precision: str = "fp32") -> Predictor:
        meta, model = load_checkpoint(path)
        chosen = pick_device(device)
        return cls(meta, model, file_sha256(path), path, chosen, pick_precision(precision, chosen))

    def compile(self) -> None:
        """torch.compile the network (slow first batch, faster after; opt-in)."""
        self.model = torch.compile(self.model)  # type: ignore[assignment]
        self.compiled = True

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    @property
    def stand_in(self) -> bool:
        """An untrained stand-in (no trained model for the route): it must refer everyone."""
        return bool(self.meta.get("stand_in", False))

    def preprocess(self, images: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
        """The network's input: RGB arrays prepared on the CPU (PIL), decoded image tensors on
        their own device (the GPU's JPEG path); a mixed batch meets on the model's device."""
        views = [
            prepare_tensor(image, self.preprocessing)
            if isinstance(image, torch.Tensor)
            else prepare(image, self.preprocessing)
            for image in images
        ]
        if len({view.device for view in views}) > 1:
            views = [view.to(self.device) for view in views]
        return torch.stack(views)

    @torch.inference_mode()
    def _forward(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities (n, codes) and the backbone features of the photographs
        as they are (n, dim), which the guard measures."""
        batch = batch.to(self.device)
        dtype = _AUTOCAST.get(self.precision)
        if dtype is not None:
            batch = batch.to(memory_format=torch.channels_last)
        views = [batch, batch.flip(-1)] if self.flip_tta else [batch]
        total, features = None, None
        for view in views:
            with torch.autocast(
                self.device.type, dtype=dtype or torch.float32, enabled=bool(dtype)
            ):
                pooled = self.model.backbone(view)
                logits = [level.float() for level in self.model.heads(pooled)]
            if features is None:
                features = pooled.float().cpu().numpy()
            probs = torch.cat(level_probabilities(logits, self._level_sizes, self._parents), 1)
            total = probs if total is None else total + probs
        assert total is not None and features is not None
        raw = (total / len(views)).cpu().clamp(1e-6, 1 - 1e-6)
        calibrated = torch.sigmoid(torch.logit(raw) / self._temperatures)
        return calibrated.numpy(), features

    def predict_batch(self, batch: torch.Tensor) -> list[dict[str, float]]:
        """Probability per taxonomy code (before the hierarchy constraint), one dict per image,
        on the operating point's scale (calibrated when the checkpoint has temperatures); with
        flip TTA the mean of the photograph's and its mirror image's."""
        return self._rows(self._forward(batch)[0])

    def _rows(self, flat: np.ndarray) -> list[dict[str, float]]:
        codes = self.taxonomy.codes
        return [dict(zip(codes, map(float, row), strict=True)) for row in flat]

    def predict(self, images: Sequence[np.ndarray | torch.Tensor]) -> list[dict[str, float]]:
        return self.predict_batch(self.preprocess(images))

    def read(self, images: Sequence[np.ndarray | torch.Tensor]) -> list[ModelRead]:
        """Probabilities, and whether each photograph lies beyond the checkpoint's guard (a
        checkpoint without one judges every photograph familiar)."""
        probs, features = self._forward(self.preprocess(images))
        rows = self._rows(probs)
        if self.guard is None:
            return [ModelRead(row) for row in rows]
        distances = self.guard.distance(features)
        return [
            ModelRead(row, bool(d > self.guard.threshold), float(d))
            for row, d in zip(rows, distances, strict=True)
        ]

    def provenance(self, elapsed_s: float, batch_size: int) -> dict[str, Any]:
        return {
            "model": self.name,
            "version": self.version,
            "weights_sha256": self.sha256,
            "taxonomy": f"{self.taxonomy.name}/{self.taxonomy.version}",
            "probability_scale": self.operating_point.scale.value,
            "flip_tta": self.flip_tta,
            "not_assessed": sorted(self.operating_point.not_assessed),
            "guard_threshold": None if self.guard is None else self.guard.threshold,
            "preprocessing": self.preprocessing.to_dict(),
            "device": str(self.device),
            "dtype": self.precision,
            "compiled": self.compiled,
            "batch_size": batch_size,
            "seconds": round(elapsed_s, 4),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def untrained_checkpoint(route: str, directory: Path) -> Path:
    """An ImageNet backbone with random heads, made once with a fixed seed.

    Used only when no trained model exists for a route, so the pipeline still runs end to end;
    its version says "untrained" everywhere it is reported.
    """
    import fcntl

    path = directory / f"untrained-{route}.pt"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    # One stand-in for every process: the first makes it under the lock, the others wait and
    # read the same file (two random models would read one photograph two ways).
    with (directory / f".untrained-{route}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return path
        torch.manual_seed(0)
        taxonomy = load_taxonomy(route)
        meta = make_meta(
            name=f"eyescreen-{route}",
            version="0.0-untrained",
            route=route,
            backbone="efficientnet_lite0",
            taxonomy=taxonomy,
            preprocessing=Preprocessing(size=224, crop_dark_border=route == "fundus"),
        )
        meta["stand_in"] = True
        model = build_model(meta, backbone_weights="imagenet")
        save_checkpoint(path, meta, model)
    return path


def resolve_checkpoint(route: str, configured: Path | None, scratch_dir: Path) -> Path:
    """The configured checkpoint, else the shipped one, else an untrained stand-in (warned)."""
    if configured is not None:
        if not configured.exists():
            from services.kernel.errors import ModelNotFound

            raise ModelNotFound(f"configured {route} checkpoint {configured} does not exist")
        return configured
    shipped = SHIPPED_DIR / f"{route}.pt"
    if shipped.exists():
        return shipped
    log.warning("no trained %s model: using an UNTRAINED stand-in; results are meaningless", route)
    return untrained_checkpoint(route, scratch_dir)
