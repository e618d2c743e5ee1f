"""Long-running operations of the batch RPCs.

opentasks finishes a batch before it answers, so every Operation it returns is already
``done``. They are kept (bounded, in memory) so that GetOperation can read them back and a
retried call with the same ``request_id`` gets the same Operation instead of running twice.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict

from google.longrunning import operations_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from opentasks.api.messages import PB
from opentasks.domain.names import LocationName
from opentasks.errors import NotFound

MAX_KEPT_OPERATIONS = 10_000
MAX_KEPT_BYTES = 16 * 2**20


class OperationRegistry:
    """Finished operations by name, and by (parent, request_id) for idempotent retries.

    Bounded by count and by size (a batch's response carries up to 100 tasks), oldest first out.
    """

    def __init__(self, limit: int = MAX_KEPT_OPERATIONS, max_bytes: int = MAX_KEPT_BYTES) -> None:
        self._limit = limit
        self._max_bytes = max_bytes
        self._bytes = 0
        self._by_name: OrderedDict[str, tuple[operations_pb2.Operation, tuple[str, str]]] = OrderedDict()
        self._by_request: dict[tuple[str, str], str] = {}

    def replay(self, parent: str, request_id: str) -> operations_pb2.Operation | None:
        """The operation an earlier call with this ``request_id`` returned, if still kept."""
        name = self._by_request.get((parent, request_id)) if request_id else None
        return self._by_name[name][0] if name else None

    def finish(
        self,
        location: LocationName,
        parent: str,
        request_id: str,
        metadata: PB,
        outcome: PB | status_pb2.Status,
    ) -> operations_pb2.Operation:
        """Record a finished operation (its response, or a ``google.rpc.Status`` error) and return it."""
        operation = operations_pb2.Operation(name=f"{location}/operations/{uuid.uuid4().hex}", done=True)
        operation.metadata.CopyFrom(_pack(metadata))
        if isinstance(outcome, status_pb2.Status):
            operation.error.CopyFrom(outcome)
        else:
            operation.response.CopyFrom(_pack(outcome))
        request_key = (parent, request_id)
        self._by_name[operation.name] = (operation, request_key)
        self._bytes += operation.ByteSize()
        if request_id:
            self._by_request[request_key] = operation.name
        while len(self._by_name) > self._limit or (self._bytes > self._max_bytes and len(self._by_name) > 1):
            _, (old, old_key) = self._by_name.popitem(last=False)
            self._bytes -= old.ByteSize()
            if self._by_request.get(old_key) == old.name:
                del self._by_request[old_key]
        return operation

    def get(self, name: str) -> operations_pb2.Operation:
        kept = self._by_name.get(name)
        operation = kept[0] if kept else None
        if operation is None:
            raise NotFound(
                f"Operation '{name}' was not found (finished operations are kept for a while only)."
            )
        return operation


def _pack(message: PB) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
