"""docker/: compose.yaml is consistent (services, volumes, depends_on, env) and the Dockerfile builds what it says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parent.parent / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_services_present(compose: dict) -> None:
    assert {"postgres", "prefect-server", "mlflow", "worker", "gpu-worker"} <= set(compose["services"])
    assert compose["services"]["gpu-worker"]["profiles"] == ["gpu"]


def test_named_volumes_are_declared(compose: dict) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name} mounts missing file {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_depends_on_points_at_services_with_healthchecks(compose: dict) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


def test_backends_are_postgres_and_clients_point_at_services(compose: dict) -> None:
    services = compose["services"]
    assert services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    mlflow_cmd = services["mlflow"]["command"]
    assert mlflow_cmd[mlflow_cmd.index("--backend-store-uri") + 1].startswith("postgresql://")
    assert "--serve-artifacts" in mlflow_cmd
    artifacts = mlflow_cmd[mlflow_cmd.index("--artifacts-destination") + 1]
    assert any(v.endswith(":" + artifacts) for v in services["mlflow"]["volumes"])
    init_sql = (DOCKER / "postgres-init.sql").read_text()
    for db_url in (services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"],
                   mlflow_cmd[mlflow_cmd.index("--backend-store-uri") + 1]):
        database = db_url.rsplit("/", 1)[1]
        assert f"CREATE DATABASE {database};" in init_sql
    for worker in ("worker", "gpu-worker"):
        env = services[worker]["environment"]
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["MGLL_REPO_ROOT"] == "/opt/mgll"  # prefect.yaml's pull step changes into it
    allowed = mlflow_cmd[mlflow_cmd.index("--allowed-hosts") + 1].split(",")
    assert "mlflow:5000" in allowed  # workers reach MLflow by service name
    for name in ("prefect-server", "mlflow"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), "publish on loopback only"


def test_dockerfile_matches_compose_and_prefect_yaml(compose: dict) -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", dockerfile, re.M)
    assert "MGLL_REPO_ROOT=/opt/mgll" in dockerfile and "WORKDIR /opt/mgll" in dockerfile
    assert compose["services"]["gpu-worker"]["build"]["args"]["BASE_IMAGE"].startswith("nvidia/cuda:")
    assert "-c constraints.txt" in dockerfile
    entrypoint = (DOCKER / "entrypoint.sh").read_text()
    assert "prefect worker start" in entrypoint and "--type process" in entrypoint
    bash = shutil.which("bash")
    assert subprocess.run([bash, "-n", str(DOCKER / "entrypoint.sh")]).returncode == 0


def test_docker_compose_config_validates() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker client not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"`docker compose` is unavailable here: {(probe.stderr or probe.stdout).strip()[:200]}")
    result = subprocess.run([docker, "compose", "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
