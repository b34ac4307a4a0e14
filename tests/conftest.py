from __future__ import annotations

import pytest

from tests.personas import Persona, make_persona
from tests.stack_fixtures import stack, tiny_sources_file  # noqa: F401


@pytest.fixture
def owner(db: None) -> Persona:
    return make_persona("owner")


@pytest.fixture
def stranger(db: None) -> Persona:
    return make_persona("stranger")
