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
from ml.preprocess import Preprocessing, load_rgb, normalise, to_square_image

log = logging.getLogger(__name__)

SHARD = 256  # photographs per shard: at most this much work is lost to a kill


class FeatureStore:
    """Per-path (views, dim) fp32 features of one backbone and pre-processing."""

    def __init__(self, root: Path, backbone: Backbone, spec: Preprocessing, flips: bool = True):
        key = hashlib.sha256(f"{backbone.name}|{spec}|{flips}|fp32".encode()).hexdigest()[:16]
        self.folder = root / f"{backbone.name}-{spec.size}-{key}"
        self.backbone, self.spec, self.views = backbone, spec, 2 if flips else 1
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

    def compute(self, paths: Sequence[Path], device: torch.device, batch_size: int = 16) -> None:
        """Run the backbone over the paths not yet stored, a shard at a time."""
        todo = self.missing(paths)
        if not todo:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        module = self.backbone.module.to(device).eval().to(memory_format=torch.channels_last)
        progress = tqdm(total=len(todo), desc="features", unit="photo")
        for start in range(0, len(todo), SHARD):
            chunk = todo[start : start + SHARD]
            out = np.zeros((self.views, len(chunk), self.backbone.feature_dim), np.float32)
            with torch.inference_mode():
                for b in range(0, len(chunk), batch_size):
                    part = chunk[b : b + batch_size]
                    batch = (
                        torch.stack(
                            [
                                normalise(to_square_image(load_rgb(str(p)), self.spec), self.spec)
                                for p in part
                            ]
                        )
                        .to(device)
                        .to(memory_format=torch.channels_last)
                    )
                    out[0, b : b + len(part)] = module(batch).float().cpu().numpy()
                    if self.views == 2:
                        out[1, b : b + len(part)] = module(batch.flip(-1)).float().cpu().numpy()
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
        """(views, n, dim) in the order given; every path must have been computed."""
        out = np.zeros((self.views, len(paths), self.backbone.feature_dim), np.float32)
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
