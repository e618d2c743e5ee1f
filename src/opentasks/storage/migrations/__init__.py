"""Versioned schema migrations, one directory per backend, applied in file-name order."""

from __future__ import annotations

from importlib import resources


def scripts(backend: str) -> list[tuple[int, str]]:
    """``(version, sql)`` pairs for ``backend``; the version is the number before the first ``_``."""
    folder = resources.files(__package__).joinpath(backend)
    found = [
        (int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found)
