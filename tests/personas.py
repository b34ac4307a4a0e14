"""The people of the access rules: an owner, a stranger (later: a viewer with a permalink, an API
user). Each persona is a logged-in Django test client plus its user."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.test import Client


@dataclass
class Persona:
    user: object
    client: Client


def make_persona(username: str) -> Persona:
    user = get_user_model().objects.create_user(username=username, password="pw-for-tests-only")
    client = Client()
    client.force_login(user)
    return Persona(user=user, client=client)
