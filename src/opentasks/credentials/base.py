"""What the dispatcher asks of credentials: the Authorization value of a signed attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from opentasks.domain.outbound import OutboundRequest


class CredentialError(Exception):
    """No credential can be made for an attempt; the message says what to configure."""


class Credentials(Protocol):
    def authorization(self, request: OutboundRequest, now: datetime) -> str:
        """The ``Authorization`` header value for ``request`` (which names an OIDC or OAuth token).

        Raises CredentialError when none can be made.
        """
        ...
