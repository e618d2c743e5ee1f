"""``google.cloud.location.Locations``: which locations this server serves."""

from __future__ import annotations

from opentasks.domain.names import LocationName
from opentasks.errors import NotFound
from opentasks.storage.base import Store


class LocationService:
    """With a configured list of locations, exactly those; otherwise every location is served,
    and listing shows the ones that hold queues."""

    def __init__(self, store: Store, *, allowed_locations: frozenset[str] | None = None) -> None:
        self._store = store
        self._allowed = allowed_locations

    async def list_locations(self, project: str) -> list[LocationName]:
        if self._allowed is not None:
            return [LocationName(project, location) for location in sorted(self._allowed)]
        return [LocationName(project, location) for location in await self._store.list_locations(project)]

    async def get_location(self, name: LocationName) -> LocationName:
        if self._allowed is not None and name.location not in self._allowed:
            raise NotFound(f"Location '{name.location}' is not served here.")
        return name
