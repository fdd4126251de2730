"""The demo lives beside the app, not in it: a production install runs without it."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib

from setuptools import find_packages

from tests.test_foundation_commands import ROOT, _env, _production_env

#: Runs manage.py as if neither pgserver nor the demo package were installed (a wheel install).
_WITHOUT_DEMO = """
import runpy, sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"pgserver", "observability_demo"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Absent())
runpy.run_path("manage.py", run_name="__main__")
"""


def _manage_without_demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_DEMO, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_app__never_imports_the_demo():
    """Imports point down: no module of the reusable app imports observability_demo."""
    offenders = []
    for path in sorted((ROOT / "observability").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name.split(".")[0] == "observability_demo" for name in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_wheel__packages_the_app_and_project_without_the_demo():
    """`pip install .` builds from packages.find: the app and project, not the demo."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = set(find_packages(str(ROOT), include=include))
    assert {"observability", "observability.admin", "project"} <= packages
    assert not {name for name in packages if name.startswith("observability_demo")}
    assert not any("pgserver" in line for line in pyproject["project"]["dependencies"])
    extras = pyproject["project"]["optional-dependencies"]
    assert any("pgserver" in line for line in extras["demo"])


def test_settings__production_runs_without_pgserver_or_the_demo():
    """With both URLs set, `check --deploy` passes with neither pgserver nor the demo app."""
    result = _manage_without_demo(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env=_production_env(
            DATABASE_URL="postgres://u:p@localhost:5432/obs",
            BOT_DATABASE_URL="postgres://u:p@localhost:5432/bot",
        ),
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_settings__embedded_database_without_the_demo_says_what_to_install():
    """No URLs and no demo installed: one line naming the demo extra, exit 78, no traceback."""
    result = _manage_without_demo("check", env=_env())
    assert result.returncode == 78, result.stderr
    assert "pip install -e '.[demo]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_commands__absent_in_production():
    """With database URLs set and DEMO_APP unset, `demo` is not a command at all."""
    result = subprocess.run(
        [sys.executable, "manage.py", "demo", "--no-serve"],
        env=_production_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "Unknown command: 'demo'" in result.stderr
