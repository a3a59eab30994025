"""The package's structure: each module imports only from layers below its own
(the contract in pyproject.toml, checked by import-linter), and no module
imports another module's private names."""
import ast
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import fastcnn

ROOT = pathlib.Path(fastcnn.__file__).parent
REPO = ROOT.parent


def test_imports_point_down_the_layers():
    if not (REPO / "pyproject.toml").exists():
        pytest.skip("needs the source tree's pyproject.toml (the layer contract)")
    # the venv's script, also when the venv is not activated
    lint = shutil.which("lint-imports", path=os.pathsep.join(
        [os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e \".[test]\")")
    run = subprocess.run([lint, "--config", str(REPO / "pyproject.toml")], cwd=REPO,
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "1 kept, 0 broken" in run.stdout


def _is_module(dotted):
    path = REPO.joinpath(*dotted.split("."))
    return path.is_dir() or any(path.with_suffix(s).exists() for s in (".py", ".pyx", ".pxd"))


def test_no_module_imports_private_names_of_another():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module
                    and node.module.startswith("fastcnn")):
                continue
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not name.startswith("__") \
                        and not _is_module(f"{node.module}.{name}"):
                    found.append(f"{path.relative_to(REPO)}: from {node.module} import {name}")
    assert not found, "\n".join(found)
