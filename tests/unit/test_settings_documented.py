"""Every environment variable that nlaweb/settings.py reads has a row in the README's table and a
line in docker/.env.example."""

from __future__ import annotations

import re

from tests.live import REPO


def test_every_variable_the_settings_read_is_in_the_readme_and_the_env_example():
    source = (REPO / "nlaweb" / "settings.py").read_text()
    names = set(re.findall(r'env_(?:str|int|bool|list|path)\(\s*"([A-Z_]+)"', source))
    assert {"REDIS_URL", "HEARTBEAT_TIMEOUT_S", "MAX_ROWS_IN_FLIGHT_PER_USER"} <= names
    readme = (REPO / "README.md").read_text()
    example = (REPO / "docker" / ".env.example").read_text()
    assert sorted(n for n in names if f"| `{n}` |" not in readme) == []
    assert sorted(n for n in names if not re.search(rf"^{n}=", example, re.M)) == []
