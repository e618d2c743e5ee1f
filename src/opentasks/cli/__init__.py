"""The ``opentasks`` command: ``serve``, and ``queues`` / ``tasks`` shaped like ``gcloud tasks``."""

from __future__ import annotations

import click

from opentasks.cli.apply import apply
from opentasks.cli.backup import backup_command
from opentasks.cli.keys import keys
from opentasks.cli.nodes import nodes
from opentasks.cli.queues import queues
from opentasks.cli.serve import serve
from opentasks.cli.tasks import tasks
from opentasks.version import package_version


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_version(), prog_name="opentasks", message="%(prog)s %(version)s")
def main() -> None:
    """opentasks: a self-hosted, durable Google Cloud Tasks (API v2) server and its client."""


main.add_command(serve)
main.add_command(queues)
main.add_command(tasks)
main.add_command(apply)
main.add_command(keys)
main.add_command(backup_command)
main.add_command(nodes)
