"""A queue's URI override from gcloud's parts (``--http-uri-override`` and the queues YAML).

Kept apart from the declarative readers so that a CLI call imports nothing more than it needs.
"""

from __future__ import annotations

from typing import Any

URI_PARTS = ("scheme", "host", "port", "path", "query", "mode")  # gcloud's --http-uri-override keys
_SCHEMES = ("HTTP", "HTTPS")
_MODES = ("ALWAYS", "IF_NOT_EXISTS")


def uri_override(parts: dict[str, Any]) -> dict[str, Any]:
    """A queue's ``http_target.uri_override`` (proto field names) from gcloud's parts (scheme,
    host, port, path, query, mode); ValueError names a part that is wrong."""
    override: dict[str, Any] = {}
    for key, value in parts.items():
        text = str(value).strip()
        if key == "scheme":
            override["scheme"] = _choice(text, _SCHEMES, "scheme")
        elif key == "port":
            if isinstance(value, bool) or not text.isdigit() or not 0 < int(text) < 65536:
                raise ValueError(f"'port:{text}': the port is a number from 1 to 65535.")
            override["port"] = int(text)
        elif key == "path" and text:  # empty: no path override, as the API has it
            override["path_override"] = {"path": text}
        elif key == "query" and text:
            override["query_override"] = {"query_params": text}
        elif key in ("path", "query"):
            continue
        elif key == "mode":
            override["uri_override_enforce_mode"] = _choice(text.replace("-", "_"), _MODES, "mode")
        elif key == "host":
            override["host"] = text
        else:
            raise ValueError(f"'{key}' is not a part of a URI override: use {', '.join(URI_PARTS)}.")
    return override


def _choice(value: str, choices: tuple[str, ...], label: str) -> str:
    if value.upper() not in choices:
        raise ValueError(
            f"'{value}' is not a valid {label}: use one of {', '.join(c.lower() for c in choices)}."
        )
    return value.upper()
