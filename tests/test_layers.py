"""The layers keep their word: the import contracts in pyproject.toml, checked by import-linter."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint = shutil.which("lint-imports", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "lint-imports is missing: install the test extra (pip install -e '.[test]')"
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "KEPT" in result.stdout and "BROKEN" not in result.stdout


def test_fairy_finds_the_commands_of_the_layers_above_it():
    """`fairy demo` and `fairy timeline` come from the server and plugin packages' entry points."""
    from importlib.metadata import entry_points

    found = {point.name: point.value for point in entry_points(group="fairy.commands")}
    assert found == {"demo": "fairy_server.demo:main", "timeline": "fairy_plugin.commands:timeline"}
    help_text = subprocess.run([sys.executable, "-m", "fairy.cli", "--help"], capture_output=True, text=True,
                               timeout=120).stdout
    assert "demo" in help_text and "edit clips of an OTIO timeline" in help_text


def test_every_package_folder_is_installed():
    """A package folder missing from [tool.setuptools] packages works in an editable install and is absent
    from a wheel; list them all."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            if "dist" not in parts and "__pycache__" not in parts:
                found.add(".".join((name, *parts)))
    assert found == listed
