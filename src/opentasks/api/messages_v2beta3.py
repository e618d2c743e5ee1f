"""The raw protobuf classes of Cloud Tasks v2beta3, taken from the published ``google-cloud-tasks``.

Same names as :mod:`opentasks.api.messages` (the v2 classes) for every message the two versions
share, plus the v2beta3-only ones. The mixins (IAM, locations, operations) are the same messages
in both versions: they are the v2 module's.
"""

from __future__ import annotations

from typing import Any

from google.cloud import tasks_v2beta3

from opentasks.api import messages as _shared

Queue: Any = tasks_v2beta3.Queue.pb()
QueueStats: Any = tasks_v2beta3.QueueStats.pb()
Task: Any = tasks_v2beta3.Task.pb()
ListQueuesRequest: Any = tasks_v2beta3.ListQueuesRequest.pb()
ListQueuesResponse: Any = tasks_v2beta3.ListQueuesResponse.pb()
GetQueueRequest: Any = tasks_v2beta3.GetQueueRequest.pb()
CreateQueueRequest: Any = tasks_v2beta3.CreateQueueRequest.pb()
UpdateQueueRequest: Any = tasks_v2beta3.UpdateQueueRequest.pb()
DeleteQueueRequest: Any = tasks_v2beta3.DeleteQueueRequest.pb()
PurgeQueueRequest: Any = tasks_v2beta3.PurgeQueueRequest.pb()
PauseQueueRequest: Any = tasks_v2beta3.PauseQueueRequest.pb()
ResumeQueueRequest: Any = tasks_v2beta3.ResumeQueueRequest.pb()
ListTasksRequest: Any = tasks_v2beta3.ListTasksRequest.pb()
ListTasksResponse: Any = tasks_v2beta3.ListTasksResponse.pb()
GetTaskRequest: Any = tasks_v2beta3.GetTaskRequest.pb()
CreateTaskRequest: Any = tasks_v2beta3.CreateTaskRequest.pb()
DeleteTaskRequest: Any = tasks_v2beta3.DeleteTaskRequest.pb()
RunTaskRequest: Any = tasks_v2beta3.RunTaskRequest.pb()
BatchCreateTasksRequest: Any = tasks_v2beta3.BatchCreateTasksRequest.pb()
BatchCreateTasksResponse: Any = tasks_v2beta3.BatchCreateTasksResponse.pb()
BatchCreateTasksMetadata: Any = tasks_v2beta3.BatchCreateTasksMetadata.pb()
BatchDeleteTasksRequest: Any = tasks_v2beta3.BatchDeleteTasksRequest.pb()
BatchDeleteTasksMetadata: Any = tasks_v2beta3.BatchDeleteTasksMetadata.pb()
CmekConfig: Any = tasks_v2beta3.CmekConfig.pb()
GetCmekConfigRequest: Any = tasks_v2beta3.GetCmekConfigRequest.pb()
UpdateCmekConfigRequest: Any = tasks_v2beta3.UpdateCmekConfigRequest.pb()

# The mixins and well-known types: the same messages in every version.
GetIamPolicyRequest: Any = _shared.GetIamPolicyRequest
SetIamPolicyRequest: Any = _shared.SetIamPolicyRequest
TestIamPermissionsRequest: Any = _shared.TestIamPermissionsRequest
TestIamPermissionsResponse: Any = _shared.TestIamPermissionsResponse
Policy: Any = _shared.Policy
ListLocationsRequest: Any = _shared.ListLocationsRequest
ListLocationsResponse: Any = _shared.ListLocationsResponse
GetLocationRequest: Any = _shared.GetLocationRequest
Location: Any = _shared.Location
GetOperationRequest: Any = _shared.GetOperationRequest
Operation: Any = _shared.Operation
Empty: Any = _shared.Empty
