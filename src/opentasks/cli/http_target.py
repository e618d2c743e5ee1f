"""The queue-level HTTP target flags of ``gcloud tasks queues create/update``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from google.cloud import tasks_v2

_URI_PARTS = ("scheme", "host", "port", "path", "query", "mode")
_METHODS = ["POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]


def http_target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--http-uri-override",
            help="Rewrite task URLs: scheme:https,host:H,port:P,path:/p,query:a=b,mode:always|if-not-exists.",
        ),
        click.option(
            "--http-method-override",
            type=click.Choice(_METHODS, case_sensitive=False),
            help="Send every task with this method.",
        ),
        click.option(
            "--http-header-override",
            multiple=True,
            metavar="KEY:VALUE",
            help="Set this header on every task (repeatable).",
        ),
        click.option(
            "--http-oidc-service-account-email-override", help="Sign every task with OIDC as this account."
        ),
        click.option("--http-oidc-token-audience-override", help="Audience of the queue's OIDC tokens."),
        click.option(
            "--http-oauth-service-account-email-override",
            help="Send every task with this account's OAuth token.",
        ),
        click.option("--http-oauth-token-scope-override", help="Scope of the queue's OAuth tokens."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def http_target_changes(values: dict[str, Any]) -> dict[str, Any]:
    """The ``Queue.http_target`` fields the flags in ``values`` set (proto field names)."""
    changes: dict[str, Any] = {}
    if values.get("http_uri_override"):
        changes["uri_override"] = _uri_override(values["http_uri_override"])
    if values.get("http_method_override"):
        changes["http_method"] = _enum(tasks_v2.HttpMethod, values["http_method_override"], "method")
    if values.get("http_header_override"):
        changes["header_overrides"] = [{"header": _header(text)} for text in values["http_header_override"]]
    oidc = (
        values.get("http_oidc_service_account_email_override"),
        values.get("http_oidc_token_audience_override"),
    )
    if any(oidc):
        changes["oidc_token"] = {"service_account_email": oidc[0] or "", "audience": oidc[1] or ""}
    oauth = (
        values.get("http_oauth_service_account_email_override"),
        values.get("http_oauth_token_scope_override"),
    )
    if any(oauth):
        changes["oauth_token"] = {"service_account_email": oauth[0] or "", "scope": oauth[1] or ""}
    return changes


def merged(current: tasks_v2.HttpTarget | None, changes: dict[str, Any]) -> dict[str, Any]:
    """``current`` with ``changes`` applied (a token of one kind replaces the other)."""
    base: dict[str, Any] = {}
    if current is not None:
        base = tasks_v2.HttpTarget.to_dict(current, preserving_proto_field_name=True)
        uri = base.get("uri_override") or {}
        # GetQueue echoes empty path/query overrides; sent back they would clear the task's.
        for key, inner in (("path_override", "path"), ("query_override", "query_params")):
            if not (uri.get(key) or {}).get(inner):
                uri.pop(key, None)
    if "oidc_token" in changes:
        base.pop("oauth_token", None)
    if "oauth_token" in changes:
        base.pop("oidc_token", None)
    return {**base, **changes}


def _uri_override(text: str) -> dict[str, Any]:
    override: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition(":")
        key, value = key.strip().lower(), value.strip()
        if not sep or key not in _URI_PARTS:
            raise click.BadParameter(f"'{part}': write KEY:VALUE with KEY one of {', '.join(_URI_PARTS)}.")
        if key == "scheme":
            override["scheme"] = _enum(tasks_v2.UriOverride.Scheme, value, "scheme")
        elif key == "port":
            override["port"] = int(value)
        elif key == "path":
            override["path_override"] = {"path": value}
        elif key == "query":
            override["query_override"] = {"query_params": value}
        elif key == "mode":
            enforce_mode = tasks_v2.UriOverride.UriOverrideEnforceMode
            override["uri_override_enforce_mode"] = _enum(enforce_mode, value.replace("-", "_"), "mode")
        else:
            override["host"] = value
    return override


def _enum(kind: Any, name: str, label: str) -> Any:
    value = getattr(kind, name.upper(), None)
    if value is None or name.upper().endswith("UNSPECIFIED"):
        raise click.BadParameter(f"'{name}' is not a valid {label}.")
    return value


def _header(text: str) -> dict[str, str]:
    key, sep, value = text.partition(":")
    if not sep or not key.strip():
        raise click.BadParameter(f"'{text}': write KEY:VALUE.", param_hint="--http-header-override")
    return {"key": key.strip(), "value": value.strip()}
