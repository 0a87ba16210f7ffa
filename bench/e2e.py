"""The running service end to end: photographs in by DCMTK storescu, SRs out at DCMTK storescp.

    .venv/bin/python bench/e2e.py [--burst 64] [--paced 30] [--rate 1.0] [--profile both]

1. Served model (the baseline): the service's fundus model reading the stored DICOM files in
   batches as the worker does: its decoder (JPEG on the GPU when the device is one), pre-processing
   and forward pass, images per second. Also printed: the model alone on photographs decoded
   beforehand (decode excluded), the figure earlier runs called "bare model".
2. Burst: ``--burst`` photographs sent as fast as storescu goes; images per second from the
   first C-STORE to the last SR arriving at the PACS, and its ratio to the served model.
3. Paced: ``--paced`` photographs at ``--rate`` per second, one association each (as cameras
   send); per-image latency from the C-STORE to its SR at the PACS, p50 and p95.

``--profile both`` (the default) runs the pipeline on the embedded profile and then on
PostgreSQL + Redis (bench/profiles.py), each against the one baseline measured in this run.
Every photograph is its own visit (study), so each gets its own SR. Set EYESCREEN_DEVICE=cuda
(or run bench/e2e_gpu.sh) on a machine with a GPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom import dcmread  # noqa: E402

from bench.common import (  # noqa: E402
    DCMTK_ENV,
    SHARED,
    free_port,
    pacs_command,
    store,
    wait_for_echo,
)
from bench.profiles import CHOICES, chosen, profile_env  # noqa: E402
from dicom_gateway.photos import photo_to_dataset  # noqa: E402


def photos(count: int) -> list[Path]:
    found = sorted((SHARED / "data" / "fundus" / "images").rglob("*.jpg"))
    if len(found) < count:
        raise SystemExit(f"need {count} photographs under {SHARED}/data/fundus/images")
    step = len(found) // count
    return found[::step][:count]


def model_alone(paths: list[Path], batch: int) -> float:
    """Images per second of pre-processing and forward pass on photographs decoded by PIL
    beforehand (the "bare model" of earlier runs)."""
    predictor = load_model()
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    predictor.predict(images[:batch])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        predictor.predict(images[start : start + batch])
    return len(images) / (time.perf_counter() - started)


def served_model(files: list[Path], batch: int) -> tuple[float, str]:
    """Images per second of the model as the worker serves it, from the stored files: the
    worker's decoder, pre-processing and forward pass; and where JPEG was decoded."""
    from worker.decoding import photo_decoder

    predictor = load_model()
    on_gpu = predictor.device.type == "cuda" and os.environ.get(
        "EYESCREEN_GPU_JPEG_DECODE", "true"
    ).lower() not in ("0", "false", "no")
    decode = photo_decoder(predictor.device if on_gpu else None)
    stored = [f.read_bytes() for f in files]

    def read(part: list[bytes]) -> None:
        photos = decode(part)
        predictor.read([p.pixels for p in photos if not isinstance(p, Exception)])

    read(stored[:batch])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(stored), batch):
        read(stored[start : start + batch])
    return len(stored) / (time.perf_counter() - started), "GPU" if on_gpu else "CPU"


def load_model():  # type: ignore[no-untyped-def]
    from ml.predictor import Predictor

    device = os.environ.get("EYESCREEN_DEVICE", "auto")
    return Predictor.load(REPO / "ml" / "models" / "fundus.pt", device, "auto")


class Pipeline:
    def __init__(self, work: Path, overrides: dict[str, str]) -> None:
        self.port, self.pacs_port = free_port(), free_port()
        self.inbox = work / "pacs"
        self.inbox.mkdir()
        self.pacs = subprocess.Popen(
            pacs_command(self.pacs_port, self.inbox), env=dict(os.environ, **DCMTK_ENV)
        )
        env = dict(
            os.environ,
            EYESCREEN_DATA_DIR=str(work / "var"),
            EYESCREEN_DICOM_PORT=str(self.port),
            EYESCREEN_DICOM_HOST="127.0.0.1",
            EYESCREEN_SR_DESTINATIONS=f"PACS@127.0.0.1:{self.pacs_port}",
        )
        env.update(overrides)
        self.log = (work / "service.log").open("wb")
        self.service = subprocess.Popen(
            [sys.executable, "-m", "eyescreen", "up"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_echo(self.port)

    def send(self, files: list[Path]) -> None:
        store(files, self.port)

    def arrivals(self) -> dict[str, float]:
        """Source SOP Instance UID -> when its SR landed at the PACS (file modification time)."""
        seen = {}
        for path in self.inbox.iterdir():
            try:
                sr = dcmread(path, stop_before_pixels=True)
                evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
                for series in evidence.ReferencedSeriesSequence:
                    for ref in series.ReferencedSOPSequence:
                        seen[str(ref.ReferencedSOPInstanceUID)] = path.stat().st_mtime
            except Exception:  # a file still being written: next round
                continue
        return seen

    def wait_for(self, uids: set[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            arrived = self.arrivals()
            if uids <= set(arrived):
                return arrived
            time.sleep(0.1)
        raise RuntimeError(f"{len(uids - set(self.arrivals()))} SRs did not arrive")

    def stop(self) -> None:
        self.service.send_signal(signal.SIGINT)
        self.service.wait(60)
        self.pacs.terminate()
        self.pacs.wait(10)


def write(paths: list[Path], folder: Path) -> list[tuple[Path, str]]:
    files = []
    for n, photo in enumerate(paths):
        target = folder / f"{n:05d}.dcm"
        ds = photo_to_dataset(photo, patient_id=f"E2E{n}")
        ds.save_as(target, enforce_file_format=True)
        files.append((target, str(ds.SOPInstanceUID)))
    return files


def run_pipeline(
    work: Path,
    overrides: dict[str, str],
    burst: list[tuple[Path, str]],
    paced: list[tuple[Path, str]],
    rate: float,
) -> tuple[float, float, float]:
    """Burst images per second, and the paced latencies' p50 and p95 in seconds."""
    work.mkdir()
    pipeline = Pipeline(work, overrides)
    try:
        pipeline.send([paced[0][0]])  # warm the worker's first task path
        pipeline.wait_for({paced[0][1]}, 120)
        started = time.time()
        pipeline.send([f for f, _ in burst])
        arrived = pipeline.wait_for({uid for _, uid in burst}, 600)
        burst_rate = len(burst) / (max(arrived[uid] for _, uid in burst) - started)
        latencies = []
        for path, uid in paced[1:]:
            sent = time.time()
            pipeline.send([path])
            latencies.append((uid, sent))
            time.sleep(max(0.0, 1.0 / rate - (time.time() - sent)))
        arrived = pipeline.wait_for({uid for uid, _ in latencies}, 300)
        seconds = sorted(arrived[uid] - sent for uid, sent in latencies)
    finally:
        pipeline.stop()
    p50, p95 = np.percentile(seconds, [50, 95])
    return burst_rate, float(p50), float(p95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--burst", type=int, default=64)
    parser.add_argument("--paced", type=int, default=30)
    parser.add_argument("--rate", type=float, default=1.0, help="images per second when paced")
    parser.add_argument("--batch", type=int, default=32, help="the served model's batch")
    parser.add_argument("--profile", choices=CHOICES, default="both")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="eyescreen-e2e-"))
    try:
        pool = photos(args.burst + args.paced)
        (work / "burst").mkdir()
        (work / "paced").mkdir()
        burst = write(pool[: args.burst], work / "burst")
        paced = write(pool[args.burst :], work / "paced")
        alone = model_alone(pool[: args.burst], args.batch)
        served, decoder = served_model([f for f, _ in burst], args.batch)
        device = os.environ.get("EYESCREEN_DEVICE", "auto")
        print(f"{os.cpu_count()} CPUs, device {device}, batch {args.batch}")
        print(f"model alone (photos decoded beforehand): {alone:.1f} img/s")
        print(f"served model (baseline; JPEG decoded on the {decoder}): {served:.1f} img/s")
        for profile in chosen(args.profile):
            with profile_env(profile) as overrides:
                rate, p50, p95 = run_pipeline(work / profile, overrides, burst, paced, args.rate)
            print(
                f"{profile}: burst of {len(burst)} {rate:.1f} img/s, ratio to served model "
                f"{rate / served:.2f}; paced {len(paced) - 1} at {args.rate}/s latency "
                f"p50 {p50:.2f} s, p95 {p95:.2f} s"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
