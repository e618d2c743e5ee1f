"""Which hosts and addresses tasks may be sent to (a queue that fetches any URL is an SSRF tool).

Link-local addresses and the cloud metadata endpoints are denied by default. An operator adds
denied networks or host names, or restricts dispatch to an allow list.

Hosts are judged as the HTTP client will see them, not as written: yarl (under aiohttp) maps a
URL's host through IDNA/UTS-46, so full-width or mathematical-bold digits and the ideographic or
full-width full stops (U+3002, U+FF0E, U+FF61) all become the plain address 169.254.169.254,
and legacy numeric forms (``2852039166``, ``0xa9.0xfe.169.254``, ``169.254.43518``) are read as
``inet_aton`` reads them. A host the client could not send to at all is refused as well. This
check runs at CreateTask, UpdateQueue and again before each attempt; the pusher then checks
every address it actually connects to (after DNS, on every redirect hop) against the deny list.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from yarl import URL

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
        """Refuse ``url`` when its host (a name or a literal address), as the HTTP client will
        see it, is not allowed."""
        try:
            host = URL(url).raw_host or ""
            written = urlsplit(url).hostname or host
        except ValueError:
            raise TargetDenied(_unsendable(url, field_name)) from None
        self._check(host, host, written, field_name)

    def check_host(self, host: str, field_name: str = "HttpRequest.url") -> None:
        """Refuse a bare host (e.g. a queue's URI override host) that is not allowed."""
        self._check(host, "", host, field_name)

    def _check(self, key: str, normalised: str, written: str, field_name: str) -> None:
        allowed = self._verdicts.get(key)
        if allowed is None:
            allowed = self._allowed(_target(normalised or client_host(written, field_name)))
            if len(self._verdicts) < 10_000:
                self._verdicts[key] = allowed
        if not allowed:
            target = str(_target(normalised or client_host(written, field_name)))
            shown = written if written.lower().rstrip(".") == target else f"{written} ({target})"
            raise TargetDenied(_message(shown, field_name))

    def check_address(self, host: str, address: str) -> None:
        """Refuse an address that ``host`` resolved to, or that a connection is about to be
        opened to (DNS may point anywhere)."""
        if self.address_denied(address):
            shown = address if host == address else f"{host} ({address})"
            raise TargetDenied(_message(shown, "the task's URL"))

    def address_denied(self, address: str) -> bool:
        """Whether connecting to ``address`` (an IP literal) is denied."""
        parsed = _address(address)
        return parsed is not None and _matches(self._parsed[0], parsed)

    def _allowed(self, target: str | Address) -> bool:
        deny, allow = self._parsed
        return not _matches(deny, target) and (not allow or _matches(allow, target))


def _target(host: str) -> str | Address:
    """What a host stands for: an address (however written), or a name without its final dot."""
    address = _address(host)
    if address is None:
        legacy = _legacy_ipv4(host)
        address = _as_connected(legacy) if legacy is not None else None
    return address if address is not None else host.rstrip(".")


def client_host(host: str, field_name: str = "HttpRequest.url") -> str:
    """``host`` as the HTTP client will send it: IDNA/UTS-46 mapped and lower-cased, as yarl does
    (TargetDenied if it cannot be sent at all)."""
    bare = host.strip("[]")
    try:
        return URL.build(scheme="http", host=bare).raw_host or ""
    except ValueError:
        raise TargetDenied(_unsendable(host, field_name)) from None


def _unsendable(what: str, field: str) -> str:
    return f"{field}: {what} does not name a host that HTTP requests can be sent to."


_NUMBER = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def _legacy_ipv4(host: str) -> Address | None:
    """The address of a numeric host in a form ``inet_aton`` accepts (``2852039166``, ``0xa9.254.169.254``,
    ``169.254.43518``): some resolvers read such names as addresses."""
    parts = host.rstrip(".").split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMBER.fullmatch(part) for part in parts):
        return None
    *head, last = map(_number, parts)
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _number(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    return int(part, 8) if part.startswith("0") else int(part)


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
    if isinstance(address, ipaddress.IPv6Address):
        address = _embedded_ipv4(address) or address
    return _as_connected(address)


def _as_connected(address: Address) -> Address:
    """``address`` as a connection reaches it: 0.0.0.0/8 and :: reach this machine's loopback."""
    if address.is_unspecified or address in _THIS_NETWORK:
        return ipaddress.IPv6Address("::1") if address.version == 6 else ipaddress.IPv4Address("127.0.0.1")
    return address


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries and reaches (``::ffff:a.b.c.d``, the deprecated
    ``::a.b.c.d``, IPv4-translated ``::ffff:0:a.b.c.d``, 6to4 ``2002:AABB:CCDD::``, NAT64
    ``64:ff9b::a.b.c.d``), so that the IPv4
    rules judge it too."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _IPV4_TRANSLATED or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


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
