"""The Cloud Tasks message classes the client commands send, without importing the client library.

Importing ``google.cloud.tasks_v2`` takes half a second (it loads the whole generated client,
its REST and asyncio transports). The commands only need the raw protobuf classes, so the
descriptors of the published package's ``.proto`` files (v2 and v2beta3) are copied once into
a cache file and read from it afterwards: the classes are the official ones, built from the
same descriptors, in a fraction of the time. The cache is keyed by the installed package's
files, so an upgrade rebuilds it; if it cannot be written, the descriptors come from the package.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

V2 = "google.cloud.tasks.v2"
V2BETA3 = "google.cloud.tasks.v2beta3"


def message(full_name: str) -> Any:
    """The protobuf class of a Cloud Tasks message, e.g. ``message(f"{V2}.Queue")``."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(full_name))


@dataclass(frozen=True)
class Method:
    """The request and response classes of one RPC."""

    input: Any
    output: Any


# RPC -> its response message, where it is not the request's name without "Request".
_RESPONSES = {
    "ListQueues": "ListQueuesResponse",
    "GetQueue": "Queue",
    "CreateQueue": "Queue",
    "UpdateQueue": "Queue",
    "PauseQueue": "Queue",
    "ResumeQueue": "Queue",
    "PurgeQueue": "Queue",
    "DeleteQueue": "google.protobuf.Empty",
    "ListTasks": "ListTasksResponse",
    "GetTask": "Task",
    "CreateTask": "Task",
    "RunTask": "Task",
    "DeleteTask": "google.protobuf.Empty",
    "GetCmekConfig": "CmekConfig",
    "UpdateCmekConfig": "CmekConfig",
    "GetIamPolicy": "google.iam.v1.Policy",
    "SetIamPolicy": "google.iam.v1.Policy",
}


@functools.cache
def method(service: str, rpc: str) -> Method:
    """The classes of ``service``'s ``rpc`` (Cloud Tasks v2/v2beta3, or google.cloud.location).

    The published package describes the messages but not the service, hence the table.
    """
    package = service.rsplit(".", 1)[0]
    if service.startswith("google.cloud.location."):
        from google.cloud.location import locations_pb2  # noqa: PLC0415 - its own small file

        output = {"ListLocations": "ListLocationsResponse", "GetLocation": "Location"}[rpc]
        return Method(getattr(locations_pb2, f"{rpc}Request"), getattr(locations_pb2, output))
    if rpc.endswith("IamPolicy"):
        from google.iam.v1 import iam_policy_pb2, policy_pb2  # noqa: PLC0415 - only the IAM commands

        return Method(getattr(iam_policy_pb2, f"{rpc}Request"), policy_pb2.Policy)
    output = _RESPONSES[rpc]
    if output == "google.protobuf.Empty":
        from google.protobuf import empty_pb2  # noqa: PLC0415

        return Method(message(f"{package}.{rpc}Request"), empty_pb2.Empty)
    return Method(message(f"{package}.{rpc}Request"), message(f"{package}.{output}"))


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_set().file:
        pool.Add(file)
    return pool


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The descriptors of the installed ``google-cloud-tasks`` (v2 and v2beta3), from the cache."""
    path = _cache_path()
    if path is not None:
        try:
            return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
        except (OSError, DecodeError):
            pass
    built = package_descriptor_set()
    if path is not None:
        _write(path, built.SerializeToString())
    return built


def package_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The descriptors, read from the package itself (slow: imports the client library)."""
    from google.cloud import tasks_v2, tasks_v2beta3  # noqa: PLC0415 - only to fill the cache

    files = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file: Any) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        files.file.add().CopyFrom(_proto_of(file))

    add(tasks_v2.CreateTaskRequest.pb().DESCRIPTOR.file)  # cloudtasks.proto, which imports the rest
    add(tasks_v2beta3.CreateTaskRequest.pb().DESCRIPTOR.file)
    return files


def _proto_of(file: Any) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto


def _cache_path() -> Path | None:
    """Where the descriptors of the installed package are cached (None: no package found)."""
    spec = importlib.util.find_spec("google.cloud.tasks_v2")
    if spec is None or spec.origin is None:
        return None
    key = hashlib.sha256()
    for package in ("tasks_v2", "tasks_v2beta3"):
        for module in ("queue", "task", "target", "cloudtasks"):
            source = Path(spec.origin).parent.parent / package / "types" / f"{module}.py"
            try:
                stat = source.stat()
            except OSError:
                continue
            key.update(f"{source}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "opentasks" / f"cloudtasks-{key.hexdigest()[:16]}.desc"


def _write(path: Path, data: bytes) -> None:
    """Write atomically; a read-only home only costs the next call the slow path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(path)
    except OSError:
        pass
