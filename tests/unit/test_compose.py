"""docker-compose.yml cannot run here (no Docker engine); its structure is checked instead."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def load() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_production_services_are_all_there() -> None:
    services = load()["services"]
    assert {"postgres", "redis", "migrate", "gateway", "worker", "web"} <= set(services)
    for name in ("migrate", "gateway", "worker", "web"):
        env = services[name]["environment"]
        assert env["EYESCREEN_DATABASE_URL"].startswith("postgresql+psycopg2://")
        assert env["EYESCREEN_BROKER_URL"].startswith("redis://")
        assert env["EYESCREEN_ENVIRONMENT"] == "production"


def test_order_and_gpu_reservation() -> None:
    services = load()["services"]
    assert services["migrate"]["command"] == ["eyescreen", "db", "upgrade"]
    for name in ("gateway", "worker"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert services["worker"]["environment"]["EYESCREEN_DEVICE"] == "cuda"


def test_commands_exist_in_the_cli() -> None:
    from click.testing import CliRunner

    from eyescreen.cli import main

    for service in load()["services"].values():
        command = service.get("command")
        if command and command[0] == "eyescreen":
            result = CliRunner().invoke(main, [*command[1:2], "--help"])
            assert result.exit_code == 0, result.output


def test_one_worker_per_gpu() -> None:
    services = load()["services"]
    gpus = [
        service["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
        for name, service in services.items()
        if name.startswith("worker") and "deploy" in service
    ]
    assert len(gpus) >= 2 and len({tuple(g) for g in gpus}) == len(gpus)  # no GPU shared


def test_gpu_workers_read_their_queues_in_the_workers_order() -> None:
    # The compose file spells the order out per GPU worker (it is copied for more GPUs); it
    # must stay the order ``eyescreen worker`` uses (urgent has a worker of its own here).
    from worker.queues import queues_option

    for name, service in load()["services"].items():
        if name.startswith("worker") and "deploy" in service:
            assert f"--queues={queues_option(urgent=False)}" in service["command"], name
