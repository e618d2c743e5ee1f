"""The one table from :mod:`opentasks.errors` to gRPC status codes and HTTP codes."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from opentasks import errors

# error class -> (gRPC code, HTTP status)
_TABLE: dict[type[errors.OpenTasksError], tuple[grpc.StatusCode, int]] = {
    errors.InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, 400),
    errors.PayloadTooLarge: (grpc.StatusCode.INVALID_ARGUMENT, 413),
    errors.RequestTimeout: (grpc.StatusCode.DEADLINE_EXCEEDED, 408),
    errors.FailedPrecondition: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    errors.NotFound: (grpc.StatusCode.NOT_FOUND, 404),
    errors.AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, 409),
    errors.Aborted: (grpc.StatusCode.ABORTED, 409),
    errors.PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, 403),
    errors.Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, 401),
    errors.ResourceExhausted: (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    errors.Unimplemented: (grpc.StatusCode.UNIMPLEMENTED, 501),
    errors.Unavailable: (grpc.StatusCode.UNAVAILABLE, 503),
    errors.Internal: (grpc.StatusCode.INTERNAL, 500),
}


def grpc_code(error: errors.OpenTasksError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in _TABLE:
            return _TABLE[cls][0]
    return grpc.StatusCode.INTERNAL


def http_status(error: errors.OpenTasksError) -> int:
    for cls in type(error).__mro__:
        if cls in _TABLE:
            return _TABLE[cls][1]
    return 500


MAX_MESSAGE_BYTES = 2000


def wire_message(error: errors.OpenTasksError) -> str:
    """The message as sent: characters UTF-8 cannot carry (lone surrogates from a JSON string)
    escaped, and at most ``MAX_MESSAGE_BYTES`` of UTF-8. gRPC carries it twice in trailers
    (percent-encoded, and base64 in the status details) that clients cap at 16 KiB, so a
    message quoting a huge input would otherwise never arrive."""
    encoded = error.message.encode("utf-8", "backslashreplace")
    if len(encoded) <= MAX_MESSAGE_BYTES:
        return encoded.decode("utf-8")
    return encoded[: MAX_MESSAGE_BYTES - 3].decode("utf-8", "ignore") + "…"


def rpc_status(error: errors.OpenTasksError) -> status_pb2.Status:
    """The ``google.rpc.Status`` of an error, with the ``google.rpc.Help`` details Cloud Tasks sends."""
    status = status_pb2.Status(code=grpc_code(error).value[0], message=wire_message(error))
    if error.help_links:
        help_detail = error_details_pb2.Help(
            links=[
                error_details_pb2.Help.Link(description=h.description, url=h.url) for h in error.help_links
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(help_detail)
        status.details.append(detail)
    return status
