"""Loaded at the start of every Python process that ``opentasks run`` starts (this directory is
put first on its PYTHONPATH): routes Google's Cloud Tasks clients to the opentasks server that
``OPENTASKS_ROUTE_CLIENTS`` names, then loads the ``sitecustomize`` this one hides, if any."""

import importlib
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _route() -> None:
    endpoint = os.environ.get("OPENTASKS_ROUTE_CLIENTS")
    if not endpoint:
        return
    try:
        from opentasks.route_clients import route_clients_on_import  # noqa: PLC0415 - only when asked for
    except ImportError as error:  # a Python without opentasks: its clients would go to Google
        print(
            f"opentasks run: this Python ({sys.executable}) cannot import opentasks ({error}); its"
            " Cloud Tasks clients are NOT sent to opentasks. Run the command with the Python that"
            " has opentasks installed.",
            file=sys.stderr,
        )
        return
    route_clients_on_import(endpoint, os.environ.get("OPENTASKS_API_TOKEN", ""))


def _chain() -> None:
    """Load the next ``sitecustomize`` on the path, as if this one were not there."""
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != _HERE]
    ours = sys.modules.pop("sitecustomize", None)
    try:
        importlib.import_module("sitecustomize")
    except ModuleNotFoundError as error:
        if error.name != "sitecustomize":
            raise  # the other sitecustomize's own import failed: as Python would show it
        if ours is not None:
            sys.modules["sitecustomize"] = ours


_route()
_chain()
