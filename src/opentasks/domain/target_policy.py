"""Which hosts and addresses tasks may be sent to (a queue that fetches any URL is an SSRF tool).

Link-local addresses and the cloud metadata endpoints are denied by default. An operator adds
denied networks or host names, or restricts dispatch to an allow list. Host names are checked
when a task is created, and every address they resolve to is checked again when it is sent.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from opentasks.errors import InvalidArgument

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_DENY = (
    "169.254.0.0/16",  # IPv4 link-local, incl. the metadata server of GCP, AWS, Azure, OCI
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "metadata.google.internal",
    "metadata.goog",
)


class TargetDenied(InvalidArgument):
    """A task's target is outside what the operator allows."""


@dataclass(frozen=True)
class TargetPolicy:
    """Deny entries win over allow entries; a non-empty allow list admits only the hosts it
    matches. Addresses a host name resolves to are checked against the deny list.

    Entries are networks (``10.0.0.0/8``, ``::1``), exact host names, or ``*.suffix`` patterns.
    """

    deny: tuple[str, ...] = DEFAULT_DENY
    allow: tuple[str, ...] = ()
    _parsed: tuple[tuple[Network | str, ...], tuple[Network | str, ...]] = field(
        init=False, repr=False, compare=False
    )
    _verdicts: dict[str, bool] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        # Parsed once, so a bad entry fails at start-up and checks stay cheap.
        parsed = (tuple(map(_parse_entry, self.deny)), tuple(map(_parse_entry, self.allow)))
        object.__setattr__(self, "_parsed", parsed)

    def check_url(self, url: str, field_name: str = "HttpRequest.url") -> None:
        """Refuse ``url`` when its host (a name or a literal address) is not allowed."""
        self.check_host((urlsplit(url).hostname or "").lower(), field_name)

    def check_host(self, host: str, field_name: str = "HttpRequest.url") -> None:
        allowed = self._verdicts.get(host)
        if allowed is None:
            allowed = self._allowed(host)
            if len(self._verdicts) < 10_000:
                self._verdicts[host] = allowed
        if not allowed:
            raise TargetDenied(_message(host, field_name))

    def check_address(self, host: str, address: str) -> None:
        """Refuse an address that ``host`` resolved to (DNS may point anywhere)."""
        parsed = _address(address)
        if parsed is not None and _matches(self._parsed[0], parsed):
            raise TargetDenied(_message(f"{host} ({address})", "the task's URL"))

    def _allowed(self, host: str) -> bool:
        deny, allow = self._parsed
        address = _address(host)
        target: str | Address = address if address is not None else host.rstrip(".")
        return not _matches(deny, target) and (not allow or _matches(allow, target))


def _message(host: str, field: str) -> str:
    return (
        f"{field}: dispatch target {host} is not allowed on this server. Link-local and cloud "
        "metadata addresses are denied by default; the operator sets the rules with "
        "--dispatch-deny and --dispatch-allow."
    )


def _address(host: str) -> Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _parse_entry(entry: str) -> Network | str:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        pass
    name = entry.lower().rstrip(".")
    if not name or any(c in name for c in " /:@"):
        raise ValueError(f"'{entry}' is neither a network (10.0.0.0/8) nor a host name (*.example.com)")
    return name


def _matches(entries: tuple[Network | str, ...], target: str | Address) -> bool:
    for parsed in entries:
        if isinstance(parsed, str):
            if isinstance(target, str) and (
                target == parsed or (parsed.startswith("*.") and target.endswith(parsed[1:]))
            ):
                return True
        elif not isinstance(target, str) and target.version == parsed.version and target in parsed:
            return True
    return False
