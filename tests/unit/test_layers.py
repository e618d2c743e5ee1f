"""The layering of docs/architecture.md, checked on every module's imports."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "opentasks"
# layer -> packages it must never import
FORBIDDEN = {
    "domain": (
        "opentasks.storage",
        "opentasks.service",
        "opentasks.api",
        "opentasks.app",
        "opentasks.config",
        "grpc",
        "google",
        "sqlite3",
    ),
    "storage": ("opentasks.service", "opentasks.api", "opentasks.app", "grpc", "google"),
    "service": ("opentasks.api", "opentasks.app", "grpc", "google"),
    "credentials": ("opentasks.service", "opentasks.api", "opentasks.app", "opentasks.storage", "grpc"),
}
CONCRETE_STORES = ("opentasks.storage.memory", "opentasks.storage.sqlite", "opentasks.storage.postgres")


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_respects_its_layer(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    layer = relative.parts[0] if len(relative.parts) > 1 else ""
    imported = imports_of(path)
    for banned in FORBIDDEN.get(layer, ()):
        offenders = [i for i in imported if i == banned or i.startswith(banned + ".")]
        assert not offenders, f"{relative} ({layer}) must not import {offenders}"
    if layer != "storage" and relative != Path("app.py"):
        concrete = [i for i in imported if i.startswith(CONCRETE_STORES)]
        assert not concrete, f"{relative}: only app.py picks concrete stores, found {concrete}"


def test_the_check_sees_imports() -> None:
    assert "opentasks.storage.base" in imports_of(PACKAGE / "service" / "queues.py")


# The parts of dispatching depend one way: dispatcher -> queue_worker -> attempts.
DISPATCH_PARTS = {
    "attempts.py": ("opentasks.service.queue_worker", "opentasks.service.dispatcher"),
    "queue_worker.py": ("opentasks.service.dispatcher",),
}


@pytest.mark.parametrize("module", sorted(DISPATCH_PARTS))
def test_dispatch_parts_depend_one_way(module: str) -> None:
    imported = imports_of(PACKAGE / "service" / module)
    offenders = [i for i in imported if i.startswith(DISPATCH_PARTS[module])]
    assert not offenders, f"service/{module} must not import {offenders}"
