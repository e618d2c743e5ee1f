"""Wiring of the observer seam for a server: one :class:`Observers` shared by the dispatcher,
the services and the API (interceptor and middleware), with the event log, the optional access
log and the metrics subscribed. The composition root builds one :class:`Observability`."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from opentasks.api.auth import ApiAuth
from opentasks.api.observe import ObservingInterceptor, observing_middleware
from opentasks.clock import Clock
from opentasks.metrics import Metrics, add_metrics_route
from opentasks.service.event_log import default_observers
from opentasks.service.observers import Observers
from opentasks.service.queue_insights import LiveDispatch, StoreInsights
from opentasks.storage.base import Store


@dataclass
class Observability:
    clock: Clock
    observers: Observers
    metrics: Metrics

    @classmethod
    def build(cls, clock: Clock, *, access_log: bool = False) -> Observability:
        """Pass ``observers`` to the Dispatcher, QueueService and TaskService constructors."""
        observers = default_observers(clock.monotonic, access_log=access_log)
        metrics = Metrics(clock)
        observers.subscribe(metrics)
        return cls(clock, observers, metrics)

    def insights(self, store: Store, live: LiveDispatch | None) -> StoreInsights:
        """The server's QueueInsights (also read by the metrics at scrape time)."""
        insights = StoreInsights(store, self.clock, live)
        self.metrics.use_insights(insights)
        return insights

    def interceptor(self, auth: ApiAuth | None) -> ObservingInterceptor:
        return ObservingInterceptor(self.observers, auth, self.clock.monotonic)

    def add_to_http_app(self, app: web.Application, auth: ApiAuth | None, *, metrics: bool = True) -> None:
        """The REST middleware, and ``GET /metrics`` unless ``metrics`` is false (call it inside
        RestApi.app's extra_routes)."""
        app.middlewares.append(observing_middleware(self.observers, auth, self.clock.monotonic))
        if metrics:
            add_metrics_route(app, self.metrics)
