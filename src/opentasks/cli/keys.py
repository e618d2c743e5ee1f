"""``opentasks keys``: the RSA keys that sign OIDC tokens (list, rotate, retire)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from opentasks.config import default_data_dir
from opentasks.credentials.keys import KeyRing, add_key, retire_key


def _keys_dir(command: Any) -> Any:
    return click.option(
        "--keys-dir",
        envvar="OPENTASKS_KEYS_DIR",
        show_envvar=True,
        default=lambda: str(default_data_dir() / "keys"),
        show_default="keys/ in the data directory",
        type=click.Path(file_okay=False, path_type=Path),
        help="The directory `opentasks serve --keys-dir` uses.",
    )(command)


@click.group()
def keys() -> None:
    """Signing keys of OIDC tokens. The newest signs; all are published until retired.

    Rotate: `keys rotate`, wait more than an hour (tokens live 1 h), then `keys retire OLD_KID`.
    Running servers pick up changes within 10 s.
    """


@keys.command(name="list")
@_keys_dir
def list_keys(keys_dir: Path) -> None:
    """List the keys, the signing key first."""
    ring = KeyRing(keys_dir)
    ring.load()
    for index, key in enumerate(ring.keys):
        created = datetime.fromtimestamp(key.created, UTC).isoformat(timespec="seconds")
        role = "signing" if index == 0 else "published"
        click.echo(f"{key.kid}  {created}  {role}")


@keys.command()
@_keys_dir
def rotate(keys_dir: Path) -> None:
    """Add a new key; it signs from now on, and the old ones stay published."""
    key = add_key(keys_dir)
    click.echo(
        f"New signing key {key.kid}. Retire the previous one after an hour with `opentasks keys retire`."
    )


@keys.command()
@click.argument("kid")
@_keys_dir
def retire(keys_dir: Path, kid: str) -> None:
    """Delete key KID: tokens it signed stop verifying once verifiers refresh their keys."""
    try:
        retire_key(keys_dir, kid)
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Retired {kid}.")
