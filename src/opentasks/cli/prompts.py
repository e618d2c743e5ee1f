"""gcloud's confirmation before a destructive command: asked on a terminal, skipped with
``-q/--quiet``, and not asked (the command proceeds) when standard input is not a terminal."""

from __future__ import annotations

import sys

import click

from opentasks.cli.remote import Remote, fail

# What `opentasks serve` keeps a deleted queue's name reserved for, and the flag that sets it
# (opentasks.config.Settings.queue_tombstone; Cloud Tasks: up to 7 days).
QUEUE_NAME_WINDOW = "7 days"
QUEUE_NAME_WINDOW_FLAG = "--queue-tombstone"
QUEUE_DELETE_WARNING = (
    "Deleted queues can not be re-created for a duration of up to 7 days. On opentasks the name stays "
    f"reserved for {QUEUE_NAME_WINDOW} unless the server was started with another {QUEUE_NAME_WINDOW_FLAG} "
    "(OPENTASKS_QUEUE_TOMBSTONE)."
)


def confirm(remote: Remote, question: str) -> None:
    """Ask ``question``; a "no" exits with ``Aborted by user.`` (status 1)."""
    if remote.quiet or not sys.stdin.isatty():
        return
    prompt = f"{question} (Y/n)?  "
    while True:
        click.echo(prompt, nl=False, err=True)
        answer = sys.stdin.readline()
        click.echo("", err=True)
        if not answer:  # end of input: a destructive step is not taken unasked (gcloud takes the default)
            break
        answer = answer.strip().lower()
        if answer in ("", "y", "yes"):
            return
        if answer in ("n", "no"):
            break
        prompt = "Please enter 'y' or 'n':  "
    fail("Aborted by user.", 1)
