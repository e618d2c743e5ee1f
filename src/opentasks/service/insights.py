"""Read-only numbers about queues for metrics, the v2beta3 API and the command line."""

from __future__ import annotations

from typing import Protocol

from opentasks.domain.names import QueueName
from opentasks.domain.stats import QueueStats


class QueueInsights(Protocol):
    """Answers from indexes and the dispatcher's live counters, never by reading task rows, so
    asking for every queue of a large server stays cheap."""

    async def queue_stats(self, name: QueueName) -> QueueStats:
        """The numbers of one queue (NotFound if it does not exist)."""
        ...
