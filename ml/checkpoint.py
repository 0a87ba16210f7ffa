"""Checkpoints: one dict holding weights and everything needed to use and audit them.

A checkpoint is identified by the sha256 of its file. It records the taxonomy, pre-processing,
head shape, thresholds, calibration, a summary of the training data and the metrics measured.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ml.backbones import build_backbone
from ml.network import HierarchicalHeads, ScreeningNet
from ml.preprocess import Preprocessing
from services.kernel.storage import file_sha256
from services.taxonomy.tree import Taxonomy, parse_taxonomy

FORMAT = "eyescreen-checkpoint/1"
LAST_BLOCK_RECIPE = "last-block"  # ``meta["training"]["recipe"]`` of ``ml.last_block_model``


def build_model(meta: dict[str, Any], backbone_weights: str | Path | None = None) -> ScreeningNet:
    taxonomy = parse_taxonomy(meta["taxonomy"])
    backbone = build_backbone(meta["backbone"], weights=backbone_weights)
    head = meta["head"]
    heads = HierarchicalHeads(
        backbone.feature_dim,
        taxonomy.level_sizes(),
        hidden=int(head["hidden"]),
        dropout=float(head["dropout"]),
        flat=bool(head["flat"]),
    )
    return ScreeningNet(backbone.module, heads)


def make_meta(
    *,
    name: str,
    version: str,
    route: str,
    backbone: str,
    taxonomy: Taxonomy,
    preprocessing: Preprocessing,
    hidden: int = 256,
    dropout: float = 0.3,
    flat: bool = False,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "name": name,
        "version": version,
        "route": route,
        "backbone": backbone,
        "taxonomy": taxonomy.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "head": {"hidden": hidden, "dropout": dropout, "flat": flat},
        "thresholds": {},
        "calibration": {},
        "training": {},
        "metrics": {},
    }


def save_checkpoint(path: Path, meta: dict[str, Any], model: ScreeningNet) -> str:
    """Write atomically; returns the file's sha256. Weights are stored in fp16 to stay small."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    payload = dict(meta, state_dict=state)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="partial-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is shared read-only
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return file_sha256(path)


def load_checkpoint(path: Path) -> tuple[dict[str, Any], ScreeningNet]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not an eyescreen checkpoint (format {payload.get('format')!r})")
    state = payload.pop("state_dict")
    model = build_model(payload, backbone_weights=None)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return payload, model.eval()


def backbone_tuned(meta: dict[str, Any]) -> bool:
    """Whether a checkpoint's backbone differs from ImageNet's (its features must come from
    its own weights, not the shared ImageNet feature store)."""
    training = meta.get("training") or {}
    unfrozen = int((training.get("config") or {}).get("unfreeze_steps") or 0)
    return bool(unfrozen) or training.get("recipe") == LAST_BLOCK_RECIPE
