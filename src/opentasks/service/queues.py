"""Queue RPCs: create, get, list, update (upsert), delete, pause, resume, purge."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from msgspec.structs import replace

from opentasks.clock import Clock
from opentasks.domain.iam import check_etag
from opentasks.domain.limits import Limits
from opentasks.domain.names import LocationName, QueueName
from opentasks.domain.queue import (
    BurstSizeFunction,
    Queue,
    QueueState,
    apply_update_mask,
    default_burst_size,
    resolve_queue,
)
from opentasks.domain.routing import AppEngineRoutes, with_host
from opentasks.domain.target_policy import TargetPolicy
from opentasks.errors import InvalidArgument, NotFound
from opentasks.service.event_log import default_observers
from opentasks.service.events import DispatchEvents, NoDispatch
from opentasks.service.observers import QUEUE_CHANGED, Observers, QueueChange, QueueChanged
from opentasks.service.paging import next_page_token, page_request
from opentasks.service.windows import TombstonePolicy
from opentasks.storage import base
from opentasks.storage.base import Store

MAX_QUEUES_PAGE = 9800
_STATE_FILTER = re.compile(r'\s*state\s*[:=]\s*"?([A-Za-z_]+)"?\s*')


@dataclass(frozen=True)
class QueuePage:
    queues: list[Queue]
    next_page_token: str


class QueueService:
    """The rules of the queue RPCs; the store makes each change atomic."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        limits: Limits | None = None,
        tombstones: TombstonePolicy | None = None,
        allowed_locations: frozenset[str] | None = None,
        burst_size: BurstSizeFunction = default_burst_size,
        events: DispatchEvents | None = None,
        targets: TargetPolicy | None = None,
        app_engine: AppEngineRoutes | None = None,
        observers: Observers | None = None,
    ) -> None:
        self._observers = observers if observers is not None else default_observers(clock.monotonic)
        self._targets = targets or TargetPolicy()
        self._app_engine = app_engine or AppEngineRoutes()
        self._store = store
        self._clock = clock
        self._limits = limits or Limits()
        self._tombstones = tombstones or TombstonePolicy()
        self._allowed_locations = allowed_locations
        self._burst_size = burst_size
        self._events = events or NoDispatch()

    async def create_queue(self, parent: LocationName, queue: Queue, *, queue_yaml: bool = False) -> Queue:
        """Create ``queue``; ``queue_yaml`` marks a queue written from an App Engine queue.yaml."""
        if queue.name.parent != parent:
            raise InvalidArgument(
                f"Queue.name '{queue.name}' must be in the location of the request's parent '{parent}'."
            )
        self._check_location(parent)
        resolved = self._resolve(
            replace(queue, state=QueueState.RUNNING, purge_time=None, from_queue_yaml=queue_yaml)
        )
        created = await self._store.create_queue(resolved, self._clock.now())
        self._changed(created.name, QueueChange.CREATED, created)
        return created

    async def get_queue(self, name: QueueName) -> Queue:
        return await self._store.get_queue(name)

    async def list_queues(
        self, parent: LocationName, *, filter: str, page_size: int, page_token: str
    ) -> QueuePage:
        state = parse_queue_filter(filter)
        fingerprint = f"{parent}|{filter}"
        page = page_request(page_size, page_token, max_size=MAX_QUEUES_PAGE, fingerprint=fingerprint)
        after = str(page.cursor or "")
        queues = await self._store.list_queues(parent, state=state, after=after, limit=page.size + 1)
        more = len(queues) > page.size
        queues = queues[: page.size]
        cursor = queues[-1].name.queue_id if more else None
        return QueuePage(queues, next_page_token(cursor, fingerprint=fingerprint))

    async def update_queue(self, queue: Queue, update_mask: list[str], *, queue_yaml: bool = False) -> Queue:
        """Apply ``update_mask`` from ``queue`` to the stored queue, creating it when missing."""
        self._check_location(queue.name.parent)
        apply_update_mask(Queue(queue.name), queue, update_mask)  # reject bad paths before any write

        def change(current: Queue | None) -> Queue:
            existing = current or Queue(queue.name)
            return self._resolve(apply_update_mask(existing, queue, update_mask, queue_yaml=queue_yaml))

        updated = await self._store.update_queue(queue.name, change, self._clock.now())
        self._changed(updated.name, QueueChange.UPDATED, updated)
        return updated

    async def delete_queue(self, name: QueueName) -> None:
        now = self._clock.now()
        await self._store.delete_queue(name, now, self._tombstones.windows(now))
        self._changed(name, QueueChange.DELETED)

    async def pause_queue(self, name: QueueName) -> Queue:
        return await self._set_state(name, QueueState.PAUSED)

    async def resume_queue(self, name: QueueName) -> Queue:
        return await self._set_state(name, QueueState.RUNNING)

    async def purge_queue(self, name: QueueName) -> Queue:
        now = self._clock.now()
        purged = await self._store.purge_queue(name, now, self._tombstones.windows(now))
        self._changed(name, QueueChange.PURGED, purged)
        return purged

    async def get_iam_policy(self, name: QueueName) -> bytes:
        """The queue's policy document (empty when none was set)."""
        return (await self._store.get_queue(name)).iam_policy

    async def set_iam_policy(self, name: QueueName, document: bytes, expected_etag: bytes) -> bytes:
        """Replace the queue's policy document; ``expected_etag`` (if given) must match the stored one."""

        def change(current: Queue) -> Queue:
            check_etag(current.iam_policy, expected_etag)
            return replace(current, iam_policy=document)

        return (await self._modify(name, change)).iam_policy

    async def queue_exists(self, name: QueueName) -> bool:
        try:
            await self._store.get_queue(name)
        except NotFound:
            return False
        return True

    async def _set_state(self, name: QueueName, state: QueueState) -> Queue:
        changed = await self._modify(name, lambda current: replace(current, state=state))
        self._changed(
            name, QueueChange.RESUMED if state == QueueState.RUNNING else QueueChange.PAUSED, changed
        )
        return changed

    def _changed(self, name: QueueName, change: QueueChange, stored: Queue | None = None) -> None:
        self._events.queue_changed(name, stored)
        if QUEUE_CHANGED in self._observers.wanted:
            self._observers.queue_changed(QueueChanged(name, change))

    async def _modify(self, name: QueueName, change: Callable[[Queue], Queue]) -> Queue:
        """Change an existing queue atomically (NotFound if it does not exist)."""

        def existing_only(current: Queue | None) -> Queue:
            if current is None:
                raise base.queue_missing()
            return change(current)

        return await self._store.update_queue(name, existing_only, self._clock.now())

    def _resolve(self, queue: Queue) -> Queue:
        resolved = resolve_queue(queue, self._limits, self._burst_size)
        override = resolved.http_target.uri_override if resolved.http_target is not None else None
        if override is not None and override.host:
            self._targets.check_host(override.host.lower(), "HttpTarget.uriOverride.host")
        if resolved.app_engine_routing_override is not None:
            routing = with_host(resolved.app_engine_routing_override, self._app_engine)
            resolved = replace(resolved, app_engine_routing_override=routing)
        return resolved

    def _check_location(self, parent: LocationName) -> None:
        if self._allowed_locations is not None and parent.location not in self._allowed_locations:
            allowed = ", ".join(sorted(self._allowed_locations))
            raise InvalidArgument(f"Location '{parent.location}' is not served here; use one of: {allowed}.")


def parse_queue_filter(text: str) -> QueueState | None:
    """The state named by a ListQueues filter such as ``state: PAUSED`` (None for no filter)."""
    if not text.strip():
        return None
    match = _STATE_FILTER.fullmatch(text)
    names = [s.name for s in QueueState if s != QueueState.STATE_UNSPECIFIED]
    if not match or match[1].upper() not in names:
        raise InvalidArgument(
            f'Unsupported filter "{text}": the only filter supported is "state: <{"|".join(names)}>".'
        )
    return QueueState[match[1].upper()]
