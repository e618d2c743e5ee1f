"""The raw protobuf classes of Cloud Tasks v2, taken from the published ``google-cloud-tasks``.

The API works with the raw classes (not the proto-plus wrappers) because they are several
times faster to parse and build.
"""

from __future__ import annotations

from typing import Any

from google.cloud import tasks_v2
from google.protobuf import empty_pb2

PB = Any
"""A protobuf message; the generated classes carry no static types."""

Queue: Any = tasks_v2.Queue.pb()
Task: Any = tasks_v2.Task.pb()
HttpRequest: Any = tasks_v2.HttpRequest.pb()
AppEngineHttpRequest: Any = tasks_v2.AppEngineHttpRequest.pb()
AppEngineRouting: Any = tasks_v2.AppEngineRouting.pb()
HttpTarget: Any = tasks_v2.HttpTarget.pb()
Attempt: Any = tasks_v2.Attempt.pb()
ListQueuesRequest: Any = tasks_v2.ListQueuesRequest.pb()
ListQueuesResponse: Any = tasks_v2.ListQueuesResponse.pb()
GetQueueRequest: Any = tasks_v2.GetQueueRequest.pb()
CreateQueueRequest: Any = tasks_v2.CreateQueueRequest.pb()
UpdateQueueRequest: Any = tasks_v2.UpdateQueueRequest.pb()
DeleteQueueRequest: Any = tasks_v2.DeleteQueueRequest.pb()
PurgeQueueRequest: Any = tasks_v2.PurgeQueueRequest.pb()
PauseQueueRequest: Any = tasks_v2.PauseQueueRequest.pb()
ResumeQueueRequest: Any = tasks_v2.ResumeQueueRequest.pb()
ListTasksRequest: Any = tasks_v2.ListTasksRequest.pb()
ListTasksResponse: Any = tasks_v2.ListTasksResponse.pb()
GetTaskRequest: Any = tasks_v2.GetTaskRequest.pb()
CreateTaskRequest: Any = tasks_v2.CreateTaskRequest.pb()
DeleteTaskRequest: Any = tasks_v2.DeleteTaskRequest.pb()
RunTaskRequest: Any = tasks_v2.RunTaskRequest.pb()
Empty: Any = empty_pb2.Empty
