"""Resource names: ``projects/P/locations/L[/queues/Q[/tasks/T]]``.

Parsing raises :class:`~opentasks.errors.InvalidArgument` with Cloud Tasks' messages.
"""

from __future__ import annotations

import re

import msgspec

from opentasks.errors import HelpLink, InvalidArgument

_PROJECT = r"[A-Za-z0-9][A-Za-z0-9:.\-]*"
_LOCATION = r"[A-Za-z0-9][A-Za-z0-9\-]*"
_QUEUE_ID = re.compile(r"[A-Za-z0-9-]{1,100}")
_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,500}")
_LOCATION_NAME = re.compile(rf"projects/({_PROJECT})/locations/({_LOCATION})")
_QUEUE_NAME = re.compile(rf"projects/({_PROJECT})/locations/({_LOCATION})/queues/([^/]*)")
_TASK_NAME = re.compile(rf"(projects/{_PROJECT}/locations/{_LOCATION}/queues/[^/]*)/tasks/([^/]*)")

_DOCS = "https://cloud.google.com/tasks/docs/reference/rest/v2"
QUEUE_NAME_HELP = HelpLink("Definition of queue name", f"{_DOCS}/projects.locations.queues#Queue.FIELDS.name")
TASK_ID_HELP = HelpLink("Definition of task ID", f"{_DOCS}/projects.locations.queues.tasks#Task.FIELDS.name")
QUEUE_NAME_FORMAT = (
    'Queue name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>".'
)


class LocationName(msgspec.Struct, frozen=True, order=True):
    """``projects/{project}/locations/{location}``."""

    project: str
    location: str

    @classmethod
    def parse(cls, name: str) -> LocationName:
        match = _LOCATION_NAME.fullmatch(name)
        if not match:
            raise InvalidArgument(
                f'Invalid resource field value in the request: "{name}". '
                'Location name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>".'
            )
        return cls(match[1], match[2])

    def __str__(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"


class QueueName(msgspec.Struct, frozen=True, order=True):
    """``projects/{project}/locations/{location}/queues/{queue_id}``."""

    project: str
    location: str
    queue_id: str

    @classmethod
    def parse(cls, name: str) -> QueueName:
        match = _QUEUE_NAME.fullmatch(name)
        if not match or not _QUEUE_ID.fullmatch(match[3]):
            raise InvalidArgument(QUEUE_NAME_FORMAT, help_links=(QUEUE_NAME_HELP,))
        return cls(match[1], match[2], match[3])

    @classmethod
    def in_location(cls, parent: str, queue_id: str) -> QueueName:
        """The queue ``queue_id`` of the location named ``parent`` (as stores keep them)."""
        location = LocationName.parse(parent)
        return cls(location.project, location.location, queue_id)

    @property
    def parent(self) -> LocationName:
        return LocationName(self.project, self.location)

    def __str__(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/queues/{self.queue_id}"


class TaskName(msgspec.Struct, frozen=True, order=True):
    """``{queue name}/tasks/{task_id}``."""

    queue: QueueName
    task_id: str

    @classmethod
    def parse(cls, name: str) -> TaskName:
        match = _TASK_NAME.fullmatch(name)
        if not match:
            raise InvalidArgument(
                'Task name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>'
                '/queues/<QUEUE_ID>/tasks/<TASK_ID>".',
                help_links=(TASK_ID_HELP,),
            )
        return cls(QueueName.parse(match[1]), validate_task_id(match[2]))

    def __str__(self) -> str:
        return f"{self.queue}/tasks/{self.task_id}"


def validate_task_id(task_id: str) -> str:
    """Return ``task_id`` if it is legal, else raise Cloud Tasks' error."""
    if not _TASK_ID.fullmatch(task_id):
        raise InvalidArgument(
            f'Task ID "{task_id}" can contain only letters ([A-Za-z]), numbers ([0-9]), hyphens (-), '
            "or underscores (_). Task ID must between 1 and 500 characters.",
            help_links=(TASK_ID_HELP,),
        )
    return task_id
