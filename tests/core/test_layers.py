"""Imports run downward only: pushscale → adapter → pushserver → pushkit.

A module may import its own layer and the ones below it, never one above: the shared pieces
(`pushkit`) know no program, the push server knows nothing of the adapter, and only the
umbrella CLI and the demo (`pushscale`) see everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("pushkit", "pushserver", "adapter", "pushscale")


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_a_package_imports_only_its_own_layer_and_those_below(package: str) -> None:
    allowed = set(LAYERS[: LAYERS.index(package) + 1])
    upward = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - allowed)
        for path in sorted((ROOT / package).rglob("*.py"))
        if imported_packages(path) - allowed
    }
    assert upward == {}


def test_every_layer_is_a_package_here() -> None:
    assert all((ROOT / package / "__init__.py").is_file() for package in LAYERS)
