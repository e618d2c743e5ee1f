"""The raw protobuf classes of Cloud Tasks v2, taken from the published ``google-cloud-tasks``.

The API works with the raw classes (not the proto-plus wrappers) because they are several
times faster to parse and build.
"""

from __future__ import annotations

from typing import Any

from google.cloud import tasks_v2
from google.cloud.location import locations_pb2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.longrunning import operations_pb2
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
BatchCreateTasksRequest: Any = tasks_v2.BatchCreateTasksRequest.pb()
BatchCreateTasksResponse: Any = tasks_v2.BatchCreateTasksResponse.pb()
BatchCreateTasksMetadata: Any = tasks_v2.BatchCreateTasksMetadata.pb()
BatchDeleteTasksRequest: Any = tasks_v2.BatchDeleteTasksRequest.pb()
BatchDeleteTasksMetadata: Any = tasks_v2.BatchDeleteTasksMetadata.pb()
CmekConfig: Any = tasks_v2.CmekConfig.pb()
GetCmekConfigRequest: Any = tasks_v2.GetCmekConfigRequest.pb()
UpdateCmekConfigRequest: Any = tasks_v2.UpdateCmekConfigRequest.pb()
GetIamPolicyRequest: Any = iam_policy_pb2.GetIamPolicyRequest
SetIamPolicyRequest: Any = iam_policy_pb2.SetIamPolicyRequest
TestIamPermissionsRequest: Any = iam_policy_pb2.TestIamPermissionsRequest
TestIamPermissionsResponse: Any = iam_policy_pb2.TestIamPermissionsResponse
Policy: Any = policy_pb2.Policy
ListLocationsRequest: Any = locations_pb2.ListLocationsRequest
ListLocationsResponse: Any = locations_pb2.ListLocationsResponse
GetLocationRequest: Any = locations_pb2.GetLocationRequest
Location: Any = locations_pb2.Location
GetOperationRequest: Any = operations_pb2.GetOperationRequest
Operation: Any = operations_pb2.Operation
Empty: Any = empty_pb2.Empty
