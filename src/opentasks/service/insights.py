"""Read-only numbers about queues for metrics, the v2beta3 API and the command line."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from opentasks.domain.names import QueueName
from opentasks.domain.stats import QueueStats


class QueueInsights(Protocol):
    """Answers from indexes and the dispatcher's live counters, never by reading task rows, so
    asking for every queue of a large server stays cheap."""

    async def queue_stats(self, name: QueueName) -> QueueStats:
        """The numbers of one queue (NotFound if it does not exist)."""
        ...

    async def queues_stats(self, names: Collection[QueueName]) -> dict[QueueName, QueueStats]:
        """The numbers of several queues at once (a page of ListQueues); missing ones are left out."""
        ...
