import pytest
from google.protobuf import empty_pb2

from opentasks.api.operations import OperationRegistry
from opentasks.domain.names import LocationName
from opentasks.errors import NotFound

LOCATION = LocationName("p", "l")


def test_replay_by_request_id_and_bounded_memory() -> None:
    registry = OperationRegistry(limit=2)
    first = registry.finish(LOCATION, "parent", "req-1", empty_pb2.Empty(), empty_pb2.Empty())
    assert first.done and first.name.startswith("projects/p/locations/l/operations/")
    assert registry.replay("parent", "req-1") == first
    assert registry.replay("other-parent", "req-1") is None
    assert registry.get(first.name) == first
    registry.finish(LOCATION, "parent", "", empty_pb2.Empty(), empty_pb2.Empty())
    registry.finish(LOCATION, "parent", "req-3", empty_pb2.Empty(), empty_pb2.Empty())
    assert registry.replay("parent", "req-1") is None  # evicted with its operation
    with pytest.raises(NotFound):
        registry.get(first.name)
