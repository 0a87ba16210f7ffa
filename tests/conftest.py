"""Shared fixtures: real databases (SQLite file, PostgreSQL), free ports, real photographs."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EYESCREEN_SHARED", REPO.parent / "shared")).resolve()
FUNDUS = SHARED / "data" / "fundus"
ANTERIOR = SHARED / "data" / "anterior"
POSTGRES_ADMIN_URL = os.environ.get(
    "EYESCREEN_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
# Each pytest-xdist worker has two Redis databases of its own (the main one and a spare for the
# test that runs its own broker), so that parallel workers never consume or flush each other's
# tasks: worker 0 uses 11 and 12, worker 1 uses 14 and 15, worker 2 uses 9 and 10 (13 is the
# benchmarks'). EYESCREEN_TEST_REDIS overrides the URL (its database and the next one are used).
_WORKER_DATABASES = (11, 14, 9)
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
if _WORKER not in range(len(_WORKER_DATABASES)):
    raise RuntimeError(
        f"the tests have Redis databases for {len(_WORKER_DATABASES)} parallel workers, not more"
    )
REDIS_URL = os.environ.get(
    "EYESCREEN_TEST_REDIS", f"redis://127.0.0.1:6379/{_WORKER_DATABASES[_WORKER]}"
)
REDIS_DB = (REDIS_URL.rsplit("/", 1)[-1] or "14") if REDIS_URL.count("/") > 2 else "14"
REDIS_SPARE_DB = str(int(REDIS_DB) + 1)
IN_CI = os.environ.get("CI") == "true"


def needs_shared_data() -> None:
    """For tests that judge the model on real photographs; pipeline tests use generated ones."""
    if not (FUNDUS / "manifest.csv").exists():
        pytest.skip(f"real photographs not found at {FUNDUS} (set EYESCREEN_SHARED)")


@pytest.fixture(scope="session")
def generated_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of generated fundus- and slit-lamp-like JPEGs (``tests/synthetic_photos``)."""
    from tests.synthetic_photos import fundus_photos, slit_lamp_photos

    folder = tmp_path_factory.mktemp("photos")
    fundus_photos(folder, 24)
    slit_lamp_photos(folder, 4)
    return folder


@pytest.fixture
def fundus_photo(generated_photos: Path) -> Path:
    """A fundus-like photograph: the pipeline needs *a* photograph, not a real one."""
    return generated_photos / "fundus-400-0.jpg"


# Ports for the peers and services a test starts. A port the kernel picks (bind to 0) is free
# only until it is released: a parallel worker, or any client connection (they take ports of
# the same ephemeral range, 32768-60999), can take it before the peer binds it. So each xdist
# worker counts up through a block of its own below that range, never handing a port out twice.
_PORT_BLOCK = 2000
_ports = iter(range(26000 + _WORKER * _PORT_BLOCK, 26000 + (_WORKER + 1) * _PORT_BLOCK))


def free_port() -> int:
    """A port of this worker's block that nothing listens on, not handed out before."""
    for port in _ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or lingering from an earlier run
            return port
    raise RuntimeError(f"test worker {_WORKER} used up its {_PORT_BLOCK} ports")


def service_available(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if service_available(host, port):
        return
    if IN_CI:
        pytest.fail(f"{name} is not running on {host}:{port}; CI must start it (.ci/run)")
    pytest.skip(f"{name} is not running on {host}:{port}")


def require_binary(path: str) -> None:
    if not Path(path).exists():
        if IN_CI:
            pytest.fail(f"{path} missing; .ci/run installs dcmtk and dicom3tools")
        pytest.skip(f"{path} missing (apt-get install dcmtk dicom3tools)")


@contextmanager
def fresh_postgres_database(prefix: str = "eyescreen") -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards (its sessions ended first)."""
    admin = make_url(POSTGRES_ADMIN_URL)
    require_service("PostgreSQL", admin.host or "127.0.0.1", admin.port or 5432)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        engine.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = make_url(REDIS_URL.replace("redis://", "redis+x://"))
    require_service("Redis", url.host or "127.0.0.1", url.port or 6379)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of each kind the product supports."""
    from eyescreen.database import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'eyescreen.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    return url


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 180)
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small models on a shared 2-core machine: PyTorch's threads only fight (13 s against
    200 s for the source figures' test)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
