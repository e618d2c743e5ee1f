"""``opentasks locations list | describe`` and ``opentasks cmek-config describe | update``, as
``gcloud tasks locations`` and ``gcloud tasks cmek-config``."""

from __future__ import annotations

import click

from opentasks.cli.output import (
    ListOptions,
    format_option,
    limited,
    list_options,
    resource_dict,
    show,
    show_list,
)
from opentasks.cli.projection import Projection
from opentasks.cli.remote import LOCATIONS, Remote, remote_options, reports_errors, short_name

LIST_FORMAT = "table(locationId:label=NAME, name:label=FULL_NAME)"


@click.group()
def locations() -> None:
    """The locations that hold queues (like `gcloud tasks locations`)."""


@locations.command(name="list")
@list_options(LIST_FORMAT)
@remote_options
@reports_errors
def list_(remote: Remote, listing: ListOptions) -> None:
    """List the project's locations."""
    request = {"name": f"projects/{remote.project}", "page_size": listing.page_size or 0}
    found = (
        resource_dict(location)
        for location in remote.call("ListLocations", request, service=LOCATIONS).locations
    )
    show_list(limited(found, listing), listing, LIST_FORMAT, lambda name: f"{remote.rest_url}/v2/{name}")


@locations.command()
@click.argument("location_id", metavar="LOCATION")
@remote_options
@format_option("yaml")
@reports_errors
def describe(remote: Remote, location_id: str, output_format: Projection | None) -> None:
    """Show LOCATION (an ID, or projects/P/locations/L)."""
    name = (
        location_id
        if location_id.startswith("projects/")
        else f"projects/{remote.project}/locations/{location_id}"
    )
    show(resource_dict(remote.call("GetLocation", {"name": name}, service=LOCATIONS)), output_format)


@click.group(name="cmek-config")
def cmek_config() -> None:
    """The location's customer-managed encryption key (like `gcloud tasks cmek-config`)."""


@cmek_config.command(name="describe")
@remote_options
@format_option("yaml")
@reports_errors
def describe_cmek(remote: Remote, output_format: Projection | None) -> None:
    """Show the CMEK configuration of --location."""
    show(resource_dict(remote.call("GetCmekConfig", {"name": f"{remote.parent}/cmekConfig"})), output_format)


@cmek_config.command(name="update")
@click.option(
    "--kms-key-name", help="The key: its full name, or its ID with --kms-keyring (and --kms-project)."
)
@click.option("--kms-keyring", help="The key ring of the key (with a key ID).")
@click.option("--kms-project", help="The key's project (default: --project).")
@click.option("--clear-kms-key", is_flag=True, help="Stop using a key.")
@remote_options
@format_option("yaml")
@reports_errors
def update_cmek(  # noqa: PLR0917 - click passes every option as an argument
    remote: Remote,
    kms_key_name: str | None,
    kms_keyring: str | None,
    kms_project: str | None,
    clear_kms_key: bool,
    output_format: Projection | None,
) -> None:
    """Set (or with --clear-kms-key, remove) the key of --location."""
    if bool(kms_key_name) == clear_kms_key:
        raise click.UsageError("Give exactly one of --kms-key-name and --clear-kms-key.")
    key = "" if clear_kms_key else _key_name(remote, kms_key_name or "", kms_keyring, kms_project)
    request = {
        "cmek_config": {"name": f"{remote.parent}/cmekConfig", "kms_key": key},
        "update_mask": "kmsKey",
    }
    updated = remote.call("UpdateCmekConfig", request)
    click.echo(f"Updated Cmek config for KMS key: [{short_name(key)}].", err=True)
    show(resource_dict(updated), output_format)


def _key_name(remote: Remote, key: str, keyring: str | None, project: str | None) -> str:
    if key.startswith("projects/"):
        return key
    if not keyring:
        raise click.BadParameter(
            "a key ID needs --kms-keyring (or give the key's full name).", param_hint="--kms-key-name"
        )
    ring = f"projects/{project or remote.project}/locations/{remote.location}/keyRings/{keyring}"
    return f"{ring}/cryptoKeys/{key}"
