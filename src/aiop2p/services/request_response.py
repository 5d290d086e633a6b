"""The request-response wire exchange: one stream per request, one message each way.

Two framings:

* ``LENGTH_PREFIXED`` (the seed's, default): unsigned-varint length + body; the
  requester keeps its write side open until it has read the response.
* ``EOF_DELIMITED`` (rust-libp2p ``request_response`` json/cbor codecs): the body is
  sent unframed and the writer half-closes; the reader reads to EOF.

Errors are mapped to the seed's outbound failure kinds (see :mod:`aiop2p.errors`); how
the remote ended the stream tells the requester why: closed unanswered is
``ResponseOmittedError`` (firewall, dropped), reset is ``RequestRefusedError`` (overload,
unreadable request).
"""

from __future__ import annotations

import enum

from .._aio.connection import Connection
from .._aio.stream import Stream
from ..errors import (
    ConnectionClosedError,
    MessageTooLargeError,
    P2PError,
    ProtocolNotSupportedError,
    RelayLimitReachedError,
    RemoteProtocolError,
    RequestConnectionClosedError,
    RequestRefusedError,
    RequestRelayLimitError,
    RequestTooLargeError,
    ResponseOmittedError,
    ResponseTooLargeError,
    StreamClosedError,
    StreamError,
    StreamResetError,
    UnsupportedProtocolsError,
)

__all__ = [
    "DEFAULT_MAX_REQUEST_SIZE",
    "DEFAULT_MAX_RESPONSE_SIZE",
    "Framing",
    "ResponseTooLargeError",  # re-exported from aiop2p.errors, where it lives
    "read_request",
    "send_request_on",
    "write_response",
]

DEFAULT_MAX_REQUEST_SIZE = 1 << 20
DEFAULT_MAX_RESPONSE_SIZE = 10 << 20


class Framing(enum.Enum):
    LENGTH_PREFIXED = "length-prefixed"
    EOF_DELIMITED = "eof-delimited"


async def send_request_on(
    conn: Connection,
    protocols: tuple[str, ...],
    payload: bytes,
    *,
    framing: Framing,
    max_request_size: int,
    max_response_size: int,
) -> bytes:
    """Send ``payload`` on a new stream of ``conn`` and return the response body."""
    if len(payload) > max_request_size:
        raise RequestTooLargeError(
            f"request of {len(payload)} bytes exceeds max_request_size ({max_request_size})"
        )
    try:
        stream = conn.open_stream(protocols)
    except (ConnectionClosedError, StreamError) as exc:
        raise _closed_error(exc, str(exc)) from exc
    try:
        try:
            if len(protocols) > 1:
                await stream.wait_negotiated()
            if framing is Framing.LENGTH_PREFIXED:
                await stream.write_message(payload)
                response = await stream.read_message(max_response_size)
            else:
                await stream.write(payload)
                await stream.close()
                response = await stream.read_until_eof(max_response_size)
        except BaseException:
            stream.reset()  # no-op when already closed or reset
            raise
        await stream.close()
        return response
    except ProtocolNotSupportedError as exc:
        raise UnsupportedProtocolsError() from exc
    except MessageTooLargeError as exc:
        raise ResponseTooLargeError(f"response too large: {exc}") from exc
    except StreamClosedError as exc:
        raise ResponseOmittedError(
            "Connection was closed before a response was received"
            " (the remote closed the stream without answering)"
        ) from exc
    except StreamResetError as exc:
        raise RequestRefusedError(
            "Connection was closed before a response was received"
            " (the remote reset the stream: it refused the request, e.g. overloaded)"
        ) from exc
    except RemoteProtocolError as exc:
        raise RequestConnectionClosedError(f"invalid response: {exc}") from exc
    except (StreamError, ConnectionClosedError) as exc:
        raise _closed_error(exc) from exc


def _closed_error(exc: P2PError, message: str | None = None) -> RequestConnectionClosedError:
    """A relay's limit keeps its name (and ``limit_name``): the requester can tell a
    relay quota from a peer that went away."""
    if isinstance(exc, RelayLimitReachedError):
        return RequestRelayLimitError(exc)
    return RequestConnectionClosedError(message)


async def read_request(stream: Stream, *, framing: Framing, max_request_size: int) -> bytes:
    """Read one request body from an inbound stream."""
    if framing is Framing.LENGTH_PREFIXED:
        return await stream.read_message(max_request_size)
    return await stream.read_until_eof(max_request_size)


async def write_response(stream: Stream, payload: bytes, *, framing: Framing) -> None:
    """Write the response body and close our side."""
    if framing is Framing.LENGTH_PREFIXED:
        await stream.write_message(payload)
    else:
        await stream.write(payload)
    await stream.close()
