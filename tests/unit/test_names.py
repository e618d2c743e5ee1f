import pytest

from opentasks.domain.names import LocationName, QueueName, TaskName
from opentasks.errors import InvalidArgument


def test_queue_name_round_trips() -> None:
    name = QueueName.parse("projects/example.com:proj/locations/us-central1/queues/my-queue")
    assert (name.project, name.location, name.queue_id) == ("example.com:proj", "us-central1", "my-queue")
    assert str(name) == "projects/example.com:proj/locations/us-central1/queues/my-queue"
    assert name.parent == LocationName("example.com:proj", "us-central1")


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-valid-queue-name",
        "projects/p/locations/l/queues/",
        "projects/p/locations/l/queues/under_score",
        "projects/p/locations/l/queues/" + "q" * 101,
        "projects/p/locations/l/queues/q/extra",
    ],
)
def test_bad_queue_names_get_cloud_tasks_message_and_help(bad: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        QueueName.parse(bad)
    assert caught.value.message == (
        'Queue name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>".'
    )
    assert caught.value.help_links[0].description == "Definition of queue name"


def test_task_id_rules() -> None:
    queue = "projects/p/locations/l/queues/q"
    assert TaskName.parse(f"{queue}/tasks/a_B-9").task_id == "a_B-9"
    assert TaskName.parse(f"{queue}/tasks/" + "x" * 500).task_id == "x" * 500
    for bad in ("not a valid id", "x" * 501, "dot.dot"):
        with pytest.raises(InvalidArgument, match=r"can contain only letters") as caught:
            TaskName.parse(f"{queue}/tasks/{bad}")
        assert f'Task ID "{bad}"' in caught.value.message


def test_location_name_rejects_garbage() -> None:
    with pytest.raises(InvalidArgument, match="Location name must be formatted"):
        LocationName.parse("not-a-valid-parent")
