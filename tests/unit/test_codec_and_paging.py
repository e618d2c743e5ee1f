from datetime import UTC, datetime, timedelta

import pytest
from msgspec.structs import replace

from opentasks.domain.limits import Limits
from opentasks.domain.names import QueueName
from opentasks.domain.queue import (
    AppEngineRouting,
    HttpTarget,
    OidcToken,
    Queue,
    QueueState,
    UriOverride,
    UriScheme,
    resolve_queue,
)
from opentasks.domain.task import AppEngineHttpRequest, Attempt, ResponseStatus, Task, TaskDraft, new_task
from opentasks.errors import InvalidArgument
from opentasks.service.paging import next_page_token, page_request
from opentasks.service.queues import parse_queue_filter
from opentasks.storage import codec

NOW = datetime(2030, 1, 1, 0, 0, 0, 1, tzinfo=UTC)


def test_queue_round_trips_through_codec() -> None:
    queue = resolve_queue(
        Queue(
            QueueName("p", "l", "q"),
            state=QueueState.PAUSED,
            purge_time=NOW,
            app_engine_routing_override=AppEngineRouting(service="s"),
            http_target=HttpTarget(
                uri_override=UriOverride(scheme=UriScheme.HTTP, host="h", port=0),
                header_overrides=(("a", "b"),),
                oidc_token=OidcToken("e", "aud"),
            ),
        ),
        Limits(),
    )
    assert codec.loads(Queue, codec.dumps(queue)) == queue


def test_task_round_trips_through_codec() -> None:
    task = new_task(
        TaskDraft(app_engine_http_request=AppEngineHttpRequest(body=b"\x00\xff")),
        QueueName("p", "l", "q"),
        NOW,
        "1",
        Limits(),
    )
    task = replace(task, last_attempt=Attempt(NOW, NOW, NOW + timedelta(seconds=1), ResponseStatus(13, "x")))
    assert codec.loads(Task, codec.dumps(task)) == task


def test_records_written_with_every_field_still_decode() -> None:
    """Rows stored before defaults were left out of the JSON read back the same."""
    old = (
        '{"name":{"queue":{"project":"p","location":"l","queue_id":"q"},"task_id":"7"},'
        '"schedule_time":"2030-01-01T00:00:00.000001Z","enqueue_time":"2030-01-01T00:00:00.000001Z",'
        '"http_request":{"url":"https://h/x","http_method":1,"headers":{},"body":"",'
        '"oauth_token":null,"oidc_token":null},"app_engine_http_request":null,"dispatch_deadline":"PT600S",'
        '"dispatch_count":0,"response_count":0,"first_attempt":null,"last_attempt":null,'
        '"retry_config":null,"named":false,"execution_count":0,"previous_outcome":null}'
    )
    task = codec.loads(Task, old)
    assert task == codec.loads(Task, codec.dumps(task))
    assert '"oauth_token"' not in codec.dumps(task)  # defaults are no longer written


def test_page_tokens() -> None:
    token = next_page_token("q7", fingerprint="a")
    assert page_request(10, token, max_size=100, fingerprint="a").cursor == "q7"
    assert next_page_token(None, fingerprint="a") == ""
    with pytest.raises(InvalidArgument, match="changed"):
        page_request(10, token, max_size=100, fingerprint="b")
    with pytest.raises(InvalidArgument, match="not a token"):
        page_request(10, "garbage!", max_size=100, fingerprint="a")
    with pytest.raises(InvalidArgument, match="negative"):
        page_request(-1, "", max_size=100, fingerprint="a")
    assert page_request(0, "", max_size=100, fingerprint="a").size == 100
    assert page_request(5000, "", max_size=100, fingerprint="a").size == 100


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("", None),
        ("state: PAUSED", QueueState.PAUSED),
        ('state = "RUNNING"', QueueState.RUNNING),
        ("state:disabled", QueueState.DISABLED),
    ],
)
def test_queue_filter(text: str, state: QueueState | None) -> None:
    assert parse_queue_filter(text) == state


def test_queue_filter_rejects_the_unsupported() -> None:
    with pytest.raises(InvalidArgument, match="only filter supported"):
        parse_queue_filter("name: foo")
