import pytest
from google.protobuf import empty_pb2, wrappers_pb2

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


def test_registry_is_bounded_by_size() -> None:
    registry = OperationRegistry(limit=1000, max_bytes=2000)
    big = wrappers_pb2.BytesValue(value=b"x" * 900)
    names = [registry.finish(LOCATION, "parent", f"r{i}", big, big).name for i in range(5)]
    with pytest.raises(NotFound):
        registry.get(names[0])
    assert registry.get(names[-1]).done
    assert registry.replay("parent", "r0") is None
