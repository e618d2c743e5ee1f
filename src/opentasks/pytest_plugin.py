"""pytest fixtures for testing applications against opentasks (loaded automatically once
opentasks is installed).

* ``opentasks_server``: a real server for the test session, on free ports, with an in-memory
  store; ``CLOUD_TASKS_EMULATOR_HOST`` names its HTTP port (which serves gRPC, REST and
  Firebase's calls), so :func:`opentasks.client` and other clients that read it find it.
* ``opentasks_client``: an official ``CloudTasksClient`` connected to it.
* ``opentasks_route_clients``: while a test runs, every ``CloudTasksClient`` and
  ``CloudTasksAsyncClient`` made (even with no arguments, as Google's samples make them) talks
  to that server with anonymous credentials, so application code runs unchanged.

Wait for the tasks of a queue to be done with :func:`opentasks.testing.wait_until_drained`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from google.cloud import tasks_v2

from opentasks.clients import EMULATOR_HOST, REST_URL
from opentasks.route_clients import route_clients
from opentasks.testing import ServerProcess


@pytest.fixture(scope="session")
def opentasks_server() -> Iterator[ServerProcess]:
    """An opentasks server for the whole session (memory store, dispatching on)."""
    saved = {name: os.environ.get(name) for name in (EMULATOR_HOST, REST_URL)}
    with ServerProcess("memory://") as server:
        os.environ[EMULATOR_HOST] = server.rest_url.removeprefix("http://")  # serves gRPC and REST
        os.environ[REST_URL] = server.rest_url
        try:
            yield server
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture
def opentasks_client(opentasks_server: ServerProcess) -> tasks_v2.CloudTasksClient:
    """The official client, wired to ``opentasks_server``."""
    return opentasks_server.client()


@pytest.fixture
def opentasks_route_clients(opentasks_server: ServerProcess) -> Iterator[ServerProcess]:
    """Route every Cloud Tasks client made during the test to ``opentasks_server`` (see
    :func:`opentasks.route_clients.route_clients`); undone after the test."""
    undo = route_clients(opentasks_server.rest_url)
    try:
        yield opentasks_server
    finally:
        undo()
