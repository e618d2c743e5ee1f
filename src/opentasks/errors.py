"""The one error hierarchy of opentasks.

Services raise these; the API layer maps each to a gRPC status and an HTTP code in one
table (:mod:`opentasks.api.status`). Messages follow Cloud Tasks' wording where known.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HelpLink:
    """A ``google.rpc.Help`` link sent as an error detail."""

    description: str
    url: str


class OpenTasksError(Exception):
    """Base of every error that reaches an API caller."""

    def __init__(self, message: str, *, help_links: tuple[HelpLink, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.help_links = help_links


class InvalidArgument(OpenTasksError):
    """The request itself is wrong; the message says what to fix."""


class PayloadTooLarge(InvalidArgument):
    """The request body exceeds the server's size limit (HTTP 413)."""


class RequestTimeout(OpenTasksError):
    """The client did not send its whole request in time (HTTP 408)."""


class NotFound(OpenTasksError):
    """The named resource does not exist."""


class AlreadyExists(OpenTasksError):
    """A resource with that name exists (or existed too recently)."""


class FailedPrecondition(OpenTasksError):
    """The system is not in a state that allows the request."""


class Aborted(OpenTasksError):
    """A concurrent change won (e.g. an IAM policy etag no longer matches); read again and retry."""


class PermissionDenied(OpenTasksError):
    """The caller may not do this."""


class Unauthenticated(OpenTasksError):
    """The caller did not prove who it is."""


class ResourceExhausted(OpenTasksError):
    """A quota or limit was hit."""


class Unimplemented(OpenTasksError):
    """The server does not support this call."""


class Unavailable(OpenTasksError):
    """Try again later (e.g. the server is shutting down)."""


class Internal(OpenTasksError):
    """A bug or a broken invariant; never expected."""
