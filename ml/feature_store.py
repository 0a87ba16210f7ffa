"""Backbone features kept per photograph, so that the backbone runs once per image.

``extract_features`` caches one array per *list* of samples: a second manifest, a source
left out or a guard fitted on another subset would run the backbone again over the same
photographs. The store keeps features per file path instead, in shards written as they are
computed (a killed extraction continues where it stopped), under one folder per backbone,
pre-processing and view count. Paths are resolved, so two manifests naming one file share it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ml.backbones import Backbone
from ml.camera_augment import CameraVariation, views_of
from ml.preprocess import Preprocessing, load_rgb, normalise, to_square_image

log = logging.getLogger(__name__)

SHARD = 256  # photographs per shard: at most this much work is lost to a kill


class _ShardedStore:
    """Per-path (views, *shape) arrays in shards; subclasses say how a batch is encoded."""

    def __init__(self, folder: Path, views: int, shape: tuple[int, ...], dtype: type) -> None:
        self.folder, self.views, self.shape, self.dtype = folder, views, shape, dtype
        self._index: dict[str, tuple[int, int]] = {}
        self._shards: list[np.ndarray] = []
        self._load()

    def _load(self) -> None:
        for names in sorted(self.folder.glob("part-*.txt")):
            array = names.with_suffix(".npy")
            if not array.exists():
                continue  # a shard whose features never reached the disk
            shard = len(self._shards)
            self._shards.append(np.load(array, mmap_mode="r"))
            for row, path in enumerate(names.read_text().splitlines()):
                self._index[path] = (shard, row)

    def __contains__(self, path: object) -> bool:
        return str(Path(str(path)).resolve()) in self._index

    def missing(self, paths: Sequence[Path]) -> list[Path]:
        seen: set[str] = set()
        out = []
        for p in paths:
            key = str(Path(p).resolve())
            if key not in self._index and key not in seen:
                seen.add(key)
                out.append(Path(key))
        return out

    def _prepare(self, device: torch.device) -> None:
        """Called once before a computation (move the network to the device)."""

    def _encode(self, paths: list[Path], device: torch.device) -> np.ndarray:
        """(views, len(paths), *shape) for a batch of photographs."""
        raise NotImplementedError

    def compute(self, paths: Sequence[Path], device: torch.device, batch_size: int = 16) -> None:
        """Run the network over the paths not yet stored, a shard at a time."""
        todo = self.missing(paths)
        if not todo:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._prepare(device)
        progress = tqdm(total=len(todo), desc="features", unit="photo")
        for start in range(0, len(todo), SHARD):
            chunk = todo[start : start + SHARD]
            out: np.ndarray = np.zeros((self.views, len(chunk), *self.shape), self.dtype)
            with torch.inference_mode():
                for b in range(0, len(chunk), batch_size):
                    part = chunk[b : b + batch_size]
                    out[:, b : b + len(part)] = self._encode(part, device)
                    progress.update(len(part))
            name = f"part-{len(self._shards):05d}"
            np.save(self.folder / f"{name}.npy", out)  # the array first: names mark it complete
            (self.folder / f"{name}.txt").write_text("\n".join(str(p) for p in chunk) + "\n")
            shard = len(self._shards)
            self._shards.append(out)
            for row, p in enumerate(chunk):
                self._index[str(p)] = (shard, row)
        progress.close()

    def get(self, paths: Sequence[Path]) -> np.ndarray:
        """(views, n, *shape) in the order given; every path must have been computed."""
        out: np.ndarray = np.zeros((self.views, len(paths), *self.shape), self.dtype)
        for i, p in enumerate(paths):
            key = str(Path(p).resolve())
            if key not in self._index:
                raise KeyError(f"{p}: no features stored; compute them first")
            shard, row = self._index[key]
            out[:, i] = self._shards[shard][:, row]
        return out

    def features(
        self, paths: Sequence[Path], device: torch.device, batch_size: int = 16
    ) -> np.ndarray:
        self.compute(paths, device, batch_size)
        return self.get(paths)


class FeatureStore(_ShardedStore):
    """Per-path (views, dim) fp32 pooled features of one backbone and pre-processing."""

    def __init__(self, root: Path, backbone: Backbone, spec: Preprocessing, flips: bool = True):
        key = hashlib.sha256(f"{backbone.name}|{spec}|{flips}|fp32".encode()).hexdigest()[:16]
        self.backbone, self.spec = backbone, spec
        folder = root / f"{backbone.name}-{spec.size}-{key}"
        super().__init__(folder, 2 if flips else 1, (backbone.feature_dim,), np.float32)

    def _prepare(self, device: torch.device) -> None:
        self._module = self.backbone.module.to(device).eval().to(memory_format=torch.channels_last)

    def _encode(self, paths: list[Path], device: torch.device) -> np.ndarray:
        batch = (
            torch.stack(
                [normalise(to_square_image(load_rgb(str(p)), self.spec), self.spec) for p in paths]
            )
            .to(device)
            .to(memory_format=torch.channels_last)
        )
        out = [self._module(batch)]
        if self.views == 2:
            out.append(self._module(batch.flip(-1)))
        return torch.stack(out).float().cpu().numpy()


class ActivationStore(_ShardedStore):
    """Per-path (views, C, H, W) fp16 activations entering the backbone's last block: the
    layers below stay frozen, so a fine-tuning of the last block runs from these without the
    rest of the network. Views: as is, mirrored, then camera variations (``ml.camera_augment``)."""

    def __init__(self, root: Path, backbone: Backbone, spec: Preprocessing, views: int) -> None:
        from ml.efficientnet_lite import EfficientNetLite

        if not isinstance(backbone.module, EfficientNetLite):
            raise ValueError(f"{backbone.name}: last-block activations need an EfficientNet-Lite")
        self.backbone, self.spec, self.net = backbone, spec, backbone.module
        shape = self.net.last_block_input_shape(spec.size)
        # "bn-intact": stores made before the shape probe stopped moving BatchNorm statistics
        # (2026-12-07) hold activations of a slightly altered network; they are not re-used.
        identity = f"{backbone.name}|{spec}|{views}|{CameraVariation()}|below-last-block|fp16"
        key = hashlib.sha256(f"{identity}|bn-intact".encode()).hexdigest()[:16]
        folder = root / f"{backbone.name}-{spec.size}-lower-{key}"
        super().__init__(folder, views, shape, np.float16)

    def _prepare(self, device: torch.device) -> None:
        self.net.to(device).eval().to(memory_format=torch.channels_last)

    def _encode(self, paths: list[Path], device: torch.device) -> np.ndarray:
        images = []
        for p in paths:
            square = to_square_image(load_rgb(str(p)), self.spec)
            images += [normalise(v, self.spec) for v in views_of(square, p.name, self.views)]
        batch = torch.stack(images).to(device).to(memory_format=torch.channels_last)
        lower = self.net.below_last_block(batch).float().cpu().numpy()
        lower = lower.reshape(len(paths), self.views, *self.shape).swapaxes(0, 1)
        return lower.astype(np.float16)
