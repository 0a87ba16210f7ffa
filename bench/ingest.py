"""Gateway ingest rate against DCMTK storescp, same files, same storescu, one and four associations.

    .venv/bin/python bench/ingest.py [--files 200] [--profile both|embedded|postgres-redis]

Builds Ophthalmic Photography files (JPEG baseline, as fundus cameras send) from the shared real
photographs, then sends them with DCMTK storescu to (a) DCMTK storescp writing to disk
(TCP_NODELAY=1; ``--fork`` so it serves four associations at once), (b) Orthanc, a PACS that
indexes every instance in a database and fsyncs the file (``apt-get install orthanc``; skipped
when absent) and (c) ``eyescreen gateway`` (every image checked, decoded, fsynced, recorded and
queued before success), on each profile asked for (``both``, the default: embedded, then
PostgreSQL + Redis; bench/profiles.py). Prints instances per second and MB/s for each, and each
rate as a ratio to storescp's and Orthanc's measured in this run for the same associations.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from bench.common import DCMTK_ENV, SHARED, free_port, wait_for_echo  # noqa: E402
from bench.profiles import CHOICES, chosen, profile_env  # noqa: E402
from dicom_gateway.photos import photo_to_dataset  # noqa: E402
from tests.dicom_peers import storescu_config  # noqa: E402


def build_files(count: int, folder: Path, camera_px: int = 0) -> list[Path]:
    """OP files from the shared photographs; with ``camera_px`` each photo is first enlarged to
    that many pixels on its long side (the shared photos are small; cameras send ~2-4k)."""
    photos = sorted((SHARED / "data" / "fundus" / "images").rglob("*.jpg"))[:count]
    if len(photos) < count:
        raise SystemExit(f"need {count} photographs under {SHARED}/data/fundus/images")
    files = []
    for n, photo in enumerate(photos):
        if camera_px:
            with Image.open(photo) as image:
                scale = camera_px / max(image.size)
                size = (round(image.width * scale), round(image.height * scale))
                enlarged = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
            photo = folder / f"{n:05d}.jpg"
            enlarged.save(photo, quality=92)
        target = folder / f"{n:05d}.dcm"
        photo_to_dataset(photo, patient_id=f"BENCH{n % 50}").save_as(
            target, enforce_file_format=True
        )
        files.append(target)
    return files


def send(port: int, files: list[Path], associations: int) -> float:
    """Seconds for storescu to send every file over ``associations`` parallel associations."""
    parts = [files[i::associations] for i in range(associations)]
    command = ["/usr/bin/storescu", "-xf", str(storescu_config()), "Eyescreen"]
    command += ["-aec", "EYESCREEN", "127.0.0.1", str(port)]
    started = time.perf_counter()
    procs = [
        subprocess.Popen([*command, *map(str, part)], env=DCMTK_ENV, stderr=subprocess.PIPE)
        for part in parts
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - started


def run_storescp(files: list[Path], associations: int, work: Path) -> float:
    inbox = work / f"storescp-{associations}"
    inbox.mkdir()
    port = free_port()
    command = ["/usr/bin/storescp", "--fork", "+xa", "-od", str(inbox), str(port)]
    return timed_receiver(command, port, files, associations, DCMTK_ENV)


def timed_receiver(
    command: list[str], port: int, files: list[Path], associations: int, env: dict[str, str]
) -> float:
    """Start a receiver, wait until it answers C-ECHO, time sending the files, stop it."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_echo(port)
        return send(port, files, associations)
    finally:
        proc.terminate()
        proc.wait(30)


def run_orthanc(files: list[Path], associations: int, work: Path) -> float:
    """Orthanc (Debian's package): a durable receiver like the gateway, indexing every instance
    in its SQLite database and writing the file (``SyncStorageArea``: fsynced) before success."""
    import json

    home = work / f"orthanc-{associations}"
    home.mkdir()
    port = free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(home / "storage"),
        "IndexDirectory": str(home / "index"),
        "DicomAet": "EYESCREEN",
        "DicomPort": port,
        "HttpPort": free_port(),
        "HttpServerEnabled": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "StorageCompression": False,
        "SyncStorageArea": True,
        "DicomThreadsCount": 4,
        "UnknownSopClassAccepted": True,
        "Plugins": [],
    }
    (home / "orthanc.json").write_text(json.dumps(config))
    command = [shutil.which("Orthanc") or "/usr/sbin/Orthanc", str(home / "orthanc.json")]
    return timed_receiver(command, port, files, associations, dict(os.environ))


def run_gateway(files: list[Path], associations: int, work: Path, profile: str) -> float:
    with profile_env(profile) as overrides:
        return gateway_on(files, associations, work / f"gateway-{profile}", overrides)


def gateway_on(
    files: list[Path], associations: int, work: Path, overrides: dict[str, str]
) -> float:
    port = free_port()
    env = dict(
        os.environ,
        EYESCREEN_DATA_DIR=str(work / f"gateway-{associations}"),
        EYESCREEN_DICOM_PORT=str(port),
        EYESCREEN_DICOM_HOST="127.0.0.1",
        EYESCREEN_MIN_FREE_DISK_MB="64",
        **overrides,
    )
    eyescreen = [sys.executable, "-m", "eyescreen"]
    subprocess.run([*eyescreen, "db", "upgrade"], env=env, check=True, capture_output=True)
    work.mkdir(exist_ok=True)
    log = (work / f"gateway-{associations}.log").open("wb")
    proc = subprocess.Popen([*eyescreen, "gateway"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_echo(port)
        return send(port, files, associations)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--profile", choices=CHOICES, default="both")
    parser.add_argument(
        "--camera-px", type=int, default=0, help="enlarge photos to this long side (0: as is)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="eyescreen-bench-"))
    try:
        files = build_files(args.files, work, args.camera_px)
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        print(f"{len(files)} files, {megabytes:.1f} MB, {os.cpu_count()} CPUs")
        print(
            f"{'receiver':<24}{'assocs':>7}{'inst/s':>9}{'MB/s':>8}"
            f"{'vs storescp':>13}{'vs Orthanc':>12}"
        )
        for associations in (1, 4):
            base = run_storescp(files, associations, work)
            orthanc = run_orthanc(files, associations, work) if shutil.which("Orthanc") else None
            rows = [("storescp", base), ("Orthanc", orthanc)]
            for profile in chosen(args.profile):
                gateway = run_gateway(files, associations, work, profile)
                rows.append((f"gateway {profile}", gateway))
            for name, seconds in rows:
                if seconds is None:
                    continue
                versus = f"{orthanc / seconds:>12.2f}" if orthanc else f"{'-':>12}"
                print(
                    f"{name:<24}{associations:>7}{len(files) / seconds:>9.1f}"
                    f"{megabytes / seconds:>8.1f}{base / seconds:>13.2f}{versus}"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
