"""Content-addressed, durable file store for received images and produced reports.

A file is written to a temporary name in its final directory, fsynced, renamed into place and
the directory fsynced, so a crash leaves either the whole file or nothing under its name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from services.kernel.errors import StorageFull


@dataclass(frozen=True)
class StoredFile:
    """A stored file: its sha256, path and size."""

    sha256: str
    path: Path
    size: int


class ContentStore:
    """Files stored under their sha256 (temporary file, fsync, rename, directory fsync);
    below ``min_free_bytes`` of free space new files are refused, never half-written."""

    def __init__(self, root: Path, min_free_bytes: int = 0) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes

    def path_for(self, sha256: str, suffix: str = ".dcm") -> Path:
        """The path a file with this hash has (or will have)."""
        return self.root / sha256[:2] / sha256[2:4] / f"{sha256}{suffix}"

    def check_space(self, incoming: int = 0) -> None:
        """Refuse (``StorageFull``) when the file would leave too little free space."""
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        if free - incoming < self.min_free_bytes:
            raise StorageFull(
                f"free disk {free // 2**20} MiB is below the {self.min_free_bytes // 2**20} MiB "
                "watermark; refusing new files until space is freed"
            )

    def put(self, data: bytes, suffix: str = ".dcm") -> StoredFile:
        """Store ``data`` durably; storing the same bytes again is a no-op."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest, suffix)
        if target.exists() and target.stat().st_size == len(data):
            return StoredFile(digest, target, len(data))
        self.check_space(len(data))
        write_durably(target, data, prefix=".incoming-")
        return StoredFile(digest, target, len(data))

    def read(self, sha256: str, suffix: str = ".dcm") -> bytes:
        """The bytes of a stored file."""
        return self.path_for(sha256, suffix).read_bytes()


def write_durably(target: Path, data: bytes, prefix: str = ".partial-") -> None:
    """Write a whole file or nothing under its name: a temporary file in the same folder,
    fsynced, renamed into place, the folder fsynced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
