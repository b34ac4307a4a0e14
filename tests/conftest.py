from __future__ import annotations

import pytest

from tests.personas import Persona, make_persona


@pytest.fixture
def owner(db: None) -> Persona:
    return make_persona("owner")


@pytest.fixture
def stranger(db: None) -> Persona:
    return make_persona("stranger")
