"""The installed package's version (what ``opentasks --version`` and the start-up log print)."""

from __future__ import annotations

from importlib import metadata

from opentasks import __version__


def package_version() -> str:
    """The version of the installed ``opentasks`` distribution (its metadata), or the source
    tree's ``__version__`` when it runs uninstalled."""
    try:
        return metadata.version("opentasks")
    except metadata.PackageNotFoundError:
        return __version__
