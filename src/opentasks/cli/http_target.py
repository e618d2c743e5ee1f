"""The queue-level HTTP target flags of ``gcloud tasks queues create/update``, and their
per-field ``--clear-...`` twins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from opentasks.cli.params import key_value
from opentasks.uri_parts import URI_PARTS, uri_override

_METHODS = ["POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]
# --clear-FLAG -> the HttpTarget fields (proto names) it removes; a token loses one of its fields.
CLEARS: dict[str, tuple[str, str | None]] = {
    "clear_http_uri_override": ("uri_override", None),
    "clear_http_method_override": ("http_method", None),
    "clear_http_header_override": ("header_overrides", None),
    "clear_http_oidc_service_account_email_override": ("oidc_token", "service_account_email"),
    "clear_http_oidc_token_audience_override": ("oidc_token", "audience"),
    "clear_http_oauth_service_account_email_override": ("oauth_token", "service_account_email"),
    "clear_http_oauth_token_scope_override": ("oauth_token", "scope"),
}


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


def clear_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--clear-http-uri-override`` and the others: each clears what its flag sets."""
    for name in reversed(CLEARS):
        flag = "--" + name.replace("_", "-")
        command = click.option(flag, is_flag=True, help=f"Clear {flag.replace('--clear-', '--')}.")(command)
    return command


def http_target_changes(values: dict[str, Any]) -> dict[str, Any]:
    """The ``Queue.http_target`` fields the flags in ``values`` set (proto field names)."""
    changes: dict[str, Any] = {}
    if values.get("http_uri_override"):
        changes["uri_override"] = _uri_override(values["http_uri_override"])
    if values.get("http_method_override"):
        changes["http_method"] = values["http_method_override"].upper()
    if values.get("http_header_override"):
        changes["header_overrides"] = [
            {"header": dict(zip(("key", "value"), key_value(text, "--http-header-override"), strict=True))}
            for text in values["http_header_override"]
        ]
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


def merged(current: dict[str, Any] | None, changes: dict[str, Any], cleared: list[str]) -> dict[str, Any]:
    """``current`` (proto field names) with ``changes`` applied and the ``cleared`` flags' fields
    removed (a token of one kind replaces the other; a token left without an account goes)."""
    base = dict(current or {})
    uri = base.get("uri_override") or {}
    # GetQueue echoes empty path/query overrides; sent back they would clear the task's.
    for key, inner in (("path_override", "path"), ("query_override", "query_params")):
        if not (uri.get(key) or {}).get(inner):
            uri.pop(key, None)
    if "oidc_token" in changes:
        base.pop("oauth_token", None)
    if "oauth_token" in changes:
        base.pop("oidc_token", None)
    base.update(changes)
    for flag in cleared:
        field, part = CLEARS[flag]
        if part is None:
            base.pop(field, None)
        elif field in base:
            base[field] = {k: v for k, v in base[field].items() if k != part}
            if not base[field].get("service_account_email"):
                base.pop(field)
    return base


def _uri_override(text: str) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition(":")
        key, value = key.strip().lower(), value.strip()
        if not sep or key not in URI_PARTS:
            raise _bad(f"'{part}': write KEY:VALUE with KEY one of {', '.join(URI_PARTS)}.")
        parts[key] = value
    try:
        return uri_override(parts)
    except ValueError as error:
        raise _bad(str(error)) from None


def _bad(message: str) -> click.BadParameter:
    return click.BadParameter(message, param_hint="--http-uri-override")
