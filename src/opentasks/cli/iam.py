"""``opentasks queues get-iam-policy | set-iam-policy | add-iam-policy-binding |
remove-iam-policy-binding``: a queue's IAM policy, as ``gcloud tasks queues`` reads and writes it.

opentasks stores the policy and returns it; it does not enforce it (see docs/cli.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from opentasks.cli.output import format_option, resource_dict, show
from opentasks.cli.projection import Projection
from opentasks.cli.remote import Remote, fail, remote_options, reports_errors, short_name


@click.command(name="get-iam-policy")
@click.argument("queue")
@remote_options
@format_option("yaml")
@reports_errors
def get_iam_policy(remote: Remote, queue: str, output_format: Projection | None) -> None:
    """Show the IAM policy of QUEUE."""
    show(resource_dict(remote.call("GetIamPolicy", {"resource": remote.queue(queue)})), output_format)


@click.command(name="set-iam-policy")
@click.argument("queue")
@click.argument("policy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@remote_options
@format_option("yaml")
@reports_errors
def set_iam_policy(remote: Remote, queue: str, policy_file: Path, output_format: Projection | None) -> None:
    """Replace the IAM policy of QUEUE with POLICY_FILE (JSON or YAML, as get-iam-policy prints it)."""
    _set(remote, remote.queue(queue), _read_policy(policy_file), output_format)


def _read_policy(path: Path) -> dict[str, Any]:
    import yaml  # noqa: PLC0415 - only this command reads YAML

    text = path.read_text()
    try:
        policy = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise click.BadParameter(
            f"{path} is neither JSON nor YAML: {error}", param_hint="POLICY_FILE"
        ) from None
    if not isinstance(policy, dict):
        raise click.BadParameter(
            f"{path} does not hold a policy (a map with bindings).", param_hint="POLICY_FILE"
        )
    return policy


def _binding_options(command: Any) -> Any:
    command = click.option("--role", required=True, help="The role, e.g. roles/cloudtasks.enqueuer.")(command)
    return click.option(
        "--member", required=True, help="The principal, e.g. user:ada@example.com or serviceAccount:..."
    )(command)


@click.command(name="add-iam-policy-binding")
@click.argument("queue")
@_binding_options
@remote_options
@format_option("yaml")
@reports_errors
def add_iam_policy_binding(
    remote: Remote, queue: str, member: str, role: str, output_format: Projection | None
) -> None:
    """Grant ROLE to MEMBER on QUEUE."""
    name = remote.queue(queue)
    policy = resource_dict(remote.call("GetIamPolicy", {"resource": name}))
    bindings = policy.setdefault("bindings", [])
    binding = next((b for b in bindings if b.get("role") == role and "condition" not in b), None)
    if binding is None:
        bindings.append({"role": role, "members": [member]})
    elif member not in binding.setdefault("members", []):
        binding["members"].append(member)
    _set(remote, name, policy, output_format)


@click.command(name="remove-iam-policy-binding")
@click.argument("queue")
@_binding_options
@remote_options
@format_option("yaml")
@reports_errors
def remove_iam_policy_binding(
    remote: Remote, queue: str, member: str, role: str, output_format: Projection | None
) -> None:
    """Take ROLE away from MEMBER on QUEUE."""
    name = remote.queue(queue)
    policy = resource_dict(remote.call("GetIamPolicy", {"resource": name}))
    bindings = policy.get("bindings", [])
    binding = next((b for b in bindings if b.get("role") == role and member in b.get("members", [])), None)
    if binding is None:
        fail("Policy binding with the specified principal and role not found!")
    binding["members"].remove(member)
    policy["bindings"] = [b for b in bindings if b.get("members")]
    _set(remote, name, policy, output_format)


def _set(remote: Remote, name: str, policy: dict[str, Any], output_format: Projection | None) -> None:
    updated = remote.call("SetIamPolicy", {"resource": name, "policy": policy})
    click.echo(f"Updated IAM policy for queue [{short_name(name).rsplit('/', 1)[-1]}].", err=True)
    show(resource_dict(updated), output_format)


COMMANDS = (get_iam_policy, set_iam_policy, add_iam_policy_binding, remove_iam_policy_binding)
