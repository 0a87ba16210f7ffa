"""Inference throughput per backbone, batch size and precision, as ratios to fp32 eager batch 1.

    .venv/bin/python bench/inference.py [--backbones efficientnet_lite0,inception_v3] [--seconds 3]
        [--size 320] [--flip-tta] [--precisions fp32,bf16]

Each figure is images per second of the whole network (backbone + hierarchical heads) on random
input, measured in this run on this machine; the ratio column compares with plain fp32 eager at
batch 1 for the same backbone. The paper reports 0.097 s per image (about 10 images/s).
"""

from __future__ import annotations

import argparse
import time

import torch

from ml.backbones import BACKBONES, build_backbone
from ml.network import HierarchicalHeads, ScreeningNet
from ml.predictor import pick_device
from services.taxonomy.tree import load_taxonomy


def images_per_second(
    model: torch.nn.Module,
    batch: int,
    size: int,
    device: torch.device,
    bf16: bool,
    seconds: float,
    flip_tta: bool = False,
) -> float:
    """Whole images per second; with flip TTA each image is read twice (as served)."""
    x = torch.randn(batch, 3, size, size, device=device)
    if bf16:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    context = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), context:
        model(x)  # warm-up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            model(x)
            if flip_tta:
                model(x.flip(-1))
            done += batch
        if device.type == "cuda":
            torch.cuda.synchronize()
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=0, help="input pixels (0: backbone's)")
    parser.add_argument("--flip-tta", action="store_true", help="also read each mirror image")
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="bf16 is slow on CPUs without native bf16"
    )
    args = parser.parse_args()
    device = pick_device(args.device)
    tree = load_taxonomy("fundus")
    sizes = tree.level_sizes()
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    print(f"{'backbone':<20}{'batch':>6}{'precision':>20}{'img/s':>10}{'s/img':>9}{'ratio':>8}")
    for name in args.backbones.split(","):
        backbone = build_backbone(name, weights=None)
        model = ScreeningNet(backbone.module, HierarchicalHeads(backbone.feature_dim, sizes))
        model = model.to(device).eval()
        baseline = None
        for batch in map(int, args.batches.split(",")):
            for bf16 in (p == "bf16" for p in args.precisions.split(",")):
                rate = images_per_second(
                    model,
                    batch,
                    args.size or backbone.input_size,
                    device,
                    bf16,
                    args.seconds,
                    args.flip_tta,
                )
                baseline = baseline or rate
                label = "bf16+channels_last" if bf16 else "fp32 eager"
                print(
                    f"{name:<20}{batch:>6}{label:>20}{rate:>10.1f}{1 / rate:>9.4f}"
                    f"{rate / baseline:>8.2f}"
                )


if __name__ == "__main__":
    main()
