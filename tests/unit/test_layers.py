"""The rooms' walls: the model code imports no Django, only workers/tasks.py of workers/ imports the
web, and no two modules share a name (ARCHITECTURE.md, "Parts and their rooms"). The import test
runs in a fresh interpreter; the rule tests read every module's imports from its syntax tree, so a
function-level import counts as much as one at the top."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Django's own file names: every app has them, and Django finds them by these names.
DJANGO_NAMES = {
    "__init__.py",
    "admin.py",
    "apps.py",
    "forms.py",
    "models.py",
    "urls.py",
    "views.py",
}


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "migrations" not in p.parts)


def _imported(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _importers(folder: str, prefix: str) -> list[str]:
    """Modules under `folder` that import `prefix` or one of its submodules."""
    return [
        str(path.relative_to(ROOT))
        for path in _modules(folder)
        if any(name == prefix or name.startswith(prefix + ".") for name in _imported(path))
    ]


def test_only_the_celery_boundary_of_the_workers_imports_the_web():
    assert _importers("workers", "nlaweb") == ["workers/tasks.py"]


def test_the_model_code_imports_no_django_nor_channels():
    assert _importers("workers/nla", "django") == []
    assert _importers("workers/nla", "channels") == []
    assert _importers("workers/nla", "nlaweb") == []


def test_importing_every_model_module_leaves_django_unimported():
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in _modules("workers/nla")
    ]
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}];"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'django', 'nlaweb', 'channels'});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_two_modules_share_a_name_but_djangos_own():
    names = Counter(p.name for folder in ("nlaweb", "workers") for p in _modules(folder))
    assert sorted(n for n, count in names.items() if count > 1 and n not in DJANGO_NAMES) == []


def test_the_rule_tests_see_a_function_level_import(tmp_path):
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from nlaweb.jobs import broker\n", encoding="utf-8")
    assert "nlaweb.jobs" in _imported(module)
