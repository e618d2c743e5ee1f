"""Request bodies sent with ``Content-Encoding``, decoded here rather than by the HTTP server, so
that every corrupt, truncated or endless stream gets an immediate 4xx and no stream inflates
past the body size limit (a small compressed body can expand a thousandfold)."""

from __future__ import annotations

import zlib

from opentasks.errors import InvalidArgument, PayloadTooLarge

_ZLIB_OR_GZIP = 32 + zlib.MAX_WBITS  # auto-detects a zlib or a gzip header
_RAW_DEFLATE = -zlib.MAX_WBITS  # "deflate" is zlib-wrapped by the RFC, raw by many clients
_CHUNK = 64 * 1024
MAX_MEMBERS = 16  # clients send one; many tiny ones would only cost the server time


def decode_body(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """``raw`` decoded by the codings of ``content_encoding`` (applied in the order listed, so
    undone last to first); at most ``limit`` bytes may come out."""
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    body = raw
    for coding in reversed(codings):
        body = _decode(body, coding, limit)
    return body


def _decode(data: bytes, coding: str, limit: int) -> bytes:
    if coding == "identity":
        return data
    if coding in ("gzip", "x-gzip"):
        return _inflate(data, _ZLIB_OR_GZIP, coding, limit)
    if coding == "deflate":
        wbits = _ZLIB_OR_GZIP if _has_zlib_header(data) else _RAW_DEFLATE
        return _inflate(data, wbits, coding, limit)
    raise InvalidArgument(
        f'Content-Encoding "{coding}" is not supported; send the body as is, gzip or deflate.'
    )


def _has_zlib_header(data: bytes) -> bool:
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _inflate(data: bytes, wbits: int, coding: str, limit: int) -> bytes:
    out = bytearray()
    view = memoryview(data)
    for _ in range(MAX_MEMBERS):  # gzip allows several members one after another
        view = _inflate_member(view, wbits, coding, limit - len(out), out)
        if not bytes(view).strip(b"\0"):  # the end, or padding with zero bytes
            return bytes(out)
    raise InvalidArgument(f"The request body holds more than {MAX_MEMBERS} {coding} streams.")


def _inflate_member(data: memoryview, wbits: int, coding: str, limit: int, out: bytearray) -> memoryview:
    """Inflate one stream of ``data`` into ``out``; return what follows it (no copy)."""
    inflater = zlib.decompressobj(wbits)
    produced = 0
    pending: bytes | memoryview = data
    try:
        while pending and not inflater.eof:
            chunk = inflater.decompress(pending, _CHUNK)
            produced += len(chunk)
            if produced > limit:
                raise PayloadTooLarge(f"Request payload size exceeds the limit: {limit} bytes.")
            out += chunk
            pending = inflater.unconsumed_tail
    except zlib.error as error:
        raise InvalidArgument(f"The request body is not valid {coding} data: {error}.") from None
    if not inflater.eof:
        raise InvalidArgument(f"The request body is not valid {coding} data: the stream is incomplete.")
    return data[len(data) - len(inflater.unused_data) :]
