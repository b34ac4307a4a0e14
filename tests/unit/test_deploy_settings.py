"""The production example env passes `manage.py check --deploy`; its placeholder SECRET_KEY is refused
at start-up; one setting (HTTPS) switches on the redirect, HSTS and secure cookies."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys

from tests.live import REPO

EXAMPLE = REPO / "docker" / ".env.example"


def example_env(tmp_path) -> dict[str, str]:
    """docker/.env.example as a process environment, with a real key and paths of this machine."""
    pairs = re.findall(r"^([A-Z_]+)=(.*)$", EXAMPLE.read_text(), re.M)
    env = dict(pairs)
    env |= {"SECRET_KEY": secrets.token_urlsafe(50), "NLAWEB_DATA_DIR": str(tmp_path)}
    env |= {"STATIC_ROOT": str(tmp_path / "static"), "NLA_SOURCES_FILE": ""}
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_of(env: dict[str, str], *names: str) -> list[str]:
    code = "from django.conf import settings as s; " + "; ".join(
        f"print(repr(s.{n}))" for n in names
    )
    result = run({"DJANGO_SETTINGS_MODULE": "nlaweb.settings", **env}, "-c", code)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[: len(names)]


def test_the_production_example_passes_the_deploy_checks(tmp_path):
    result = run(example_env(tmp_path), "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_the_example_secret_key_is_a_placeholder_and_start_up_refuses_it(tmp_path):
    from nlaweb.settings import PLACEHOLDER_SECRET_KEYS

    example_key = re.search(r"^SECRET_KEY=(.*)$", EXAMPLE.read_text(), re.M)[1]
    assert example_key in PLACEHOLDER_SECRET_KEYS
    for extra in ({}, {"DEBUG": "1"}):  # refused in every mode
        env = example_env(tmp_path) | {"SECRET_KEY": example_key} | extra
        result = run(env, "manage.py", "check")
        assert result.returncode != 0
        assert "SECRET_KEY is the placeholder of docker/.env.example; set a long random one" in (
            result.stderr
        )


def test_https_switches_on_the_redirect_hsts_and_secure_cookies(tmp_path):
    names = ("SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SESSION_COOKIE_SECURE")
    names += ("CSRF_COOKIE_SECURE", "SECURE_PROXY_SSL_HEADER")
    env = {"NLAWEB_DATA_DIR": str(tmp_path)}
    assert settings_of(env, *names) == ["False", "0", "False", "False", "None"]
    on = settings_of(env | {"HTTPS": "1"}, *names)
    assert on == ["True", "31536000", "True", "True", "('HTTP_X_FORWARDED_PROTO', 'https')"]


def test_behind_the_tls_proxy_http_is_redirected_and_https_gets_hsts(tmp_path):
    code = """
import django; django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
c = Client()
plain = c.get("/accounts/login/")
print(plain.status_code, plain.headers.get("Location"))
print(c.get("/healthz").status_code)  # the probe is answered before any redirect
"""
    env = {"DJANGO_SETTINGS_MODULE": "nlaweb.settings", "NLAWEB_DATA_DIR": str(tmp_path)}
    result = run(env | {"HTTPS": "1", "ALLOWED_HOSTS": "testserver"}, "-c", code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[0] == "301 https://testserver/accounts/login/"
    assert lines[1] == "200"
