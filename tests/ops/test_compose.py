"""Deployment files: compose.yaml validates, .env.example documents every setting."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.config import load_settings, setting_names
from shared.tasks import TaskType
from tests.support.consumer_helpers import ROOT

SERVICES = {
    "redis",
    "postgres",
    "migrate",
    "bot",
    "consumer-text",
    "consumer-image",
    "reclaim",
    "dashboard",
    "prometheus",
    "grafana",
}
# The optional services: the operator dashboard, Prometheus with Grafana, a Redis Cluster
# (six nodes and the job that joins them).
CLUSTER_SERVICES = {f"redis-cluster-{i}" for i in range(1, 7)} | {"redis-cluster-init"}
PROFILES = ["--profile", "dashboard", "--profile", "monitoring", "--profile", "cluster"]
ASSIGNMENT = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]*)=")


def _works(command: list[str]) -> bool:
    try:
        done = subprocess.run(command, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _apt_install_compose() -> None:
    """Debian's docker-compose (1.29, a Python program): validating needs no Docker daemon."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
    install += ["-o", "DPkg::Lock::Timeout=120", "docker-compose"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        # The package lists may be missing or stale on a fresh machine.
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        subprocess.run(install, env=env, capture_output=True, check=False)


def compose_command() -> list[str]:
    """`docker compose` (v2), else `docker-compose`, installed through apt when possible."""
    docker = shutil.which("docker")
    if docker and _works([docker, "compose", "version"]):
        return [docker, "compose"]
    if shutil.which("docker-compose") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        _apt_install_compose()
    legacy = shutil.which("docker-compose")
    if legacy and _works([legacy, "version"]):
        return [legacy]
    pytest.fail(
        "no compose validator: install the Docker Compose plugin or Debian's docker-compose"
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the compose project whose `.env` is `.env.example`, so the check never
    depends on (or touches) a developer's real `.env`."""
    shutil.copy(ROOT / "compose.yaml", tmp_path / "compose.yaml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    for folder in ("scripts", "deploy"):
        (tmp_path / folder).symlink_to(ROOT / folder, target_is_directory=True)
    return tmp_path


@pytest.mark.timeout(600)
def test_compose_file_is_valid(project: Path) -> None:
    compose = [*compose_command(), "-f", str(project / "compose.yaml"), *PROFILES]
    # Compose reads POSTGRES_* and COMPOSE_* from the environment before `.env`.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "COMPOSE_"))}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*compose, *args], cwd=project, env=env, capture_output=True, text=True, check=False
        )

    check = run("config", "-q")
    assert check.returncode == 0, check.stderr
    services = run("config", "--services")
    assert set(services.stdout.split()) == SERVICES | CLUSTER_SERVICES, services.stderr


def test_env_example_documents_every_setting() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    documented = {m.group(1): n for n, line in enumerate(lines) if (m := ASSIGNMENT.match(line))}
    settings = {name.upper() for name in setting_names()}
    assert settings - set(documented) == set()
    for name in settings:
        comment = lines[documented[name] - 1]
        # Each setting has its own comment line (meaning and default) right above it.
        assert comment.startswith("# ") and not ASSIGNMENT.match(comment), name
        assert "default" in comment, name


def test_env_example_loads_and_keeps_the_defaults(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    shutil.copy(ROOT / ".env.example", env_file)
    from_example = load_settings(_env_file=env_file)
    defaults = load_settings(_env_file=None)
    assert from_example == defaults


def _consumed_types(text: str) -> set[str]:
    """Every task type named by a `--types` list in `text` (a command line or a compose list)."""
    found: set[str] = set()
    for match in re.finditer(r'--types"?,?\s*"?([a-z_,]+)', text):
        found |= set(match.group(1).split(","))
    return found


def test_every_task_type_has_a_consumer_in_compose_and_the_readme() -> None:
    """A type no consumer reads waits until its tasks are lost (the voice types once were)."""
    wanted = {str(task_type) for task_type in TaskType}
    assert _consumed_types((ROOT / "compose.yaml").read_text()) == wanted
    assert _consumed_types((ROOT / "README.md").read_text()) == wanted
