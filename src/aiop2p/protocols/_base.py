"""The scaffolding the handshake-style sans-IO machines share.

Each machine under ``protocols/`` speaks one contract: the driver feeds the peer's bytes
in, then writes ``data_to_send()`` and handles ``events_received()``; ``done`` says the
machine has ended.  :class:`SansIOMachine` holds that state once for multistream, the
Noise handshake, circuit relay v2 and DCUtR, with the input buffer and the two ways
such a machine ends: it failed (later input is ignored: the driver is closing the
stream anyway) or it handed the stream over to what comes next (later input belongs
there, so feeding it here is a caller error).

One class, not a hierarchy: these machines are built per stream, and every level of
``super().__init__()`` costs.  Yamux and the Noise transport cipher keep their own
state (hot paths).
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from ..errors import InvalidArgumentError, InvalidStateError, P2PError

__all__ = ["SansIOMachine", "check_positive"]

E = TypeVar("E")


def check_positive(name: str, value: int) -> None:
    """Refuse a limit below 1 (a zero limit would refuse every message)."""
    if value < 1:
        raise InvalidArgumentError(f"{name} must be positive, got {value}")


class SansIOMachine(Generic[E]):
    """Bytes to send, events to hand out, the input buffer and the end of a machine.

    Subclasses parse ``_buffer`` in :meth:`_process` (raising :class:`P2PError` for peer
    misbehaviour), end with their failure event in :meth:`_fail`, call :meth:`_feed`
    from ``receive_data`` (or read ``_buffer`` their own way) and set
    :attr:`_HANDED_OVER` to the error text for input after a hand-over.
    """

    __slots__ = ("_buffer", "_done", "_events", "_handed_over", "_out")

    _HANDED_OVER: ClassVar[str] = "the stream was handed over"

    def __init__(self) -> None:
        self._out = bytearray()
        self._events: list[E] = []
        self._done = False
        self._buffer = bytearray()
        self._handed_over = False

    @property
    def done(self) -> bool:
        """True once a terminal event was emitted; the machine takes no more input."""
        return self._done

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer (handed out and cleared)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def events_received(self) -> list[E]:
        """Events since the last call (handed out and cleared)."""
        events = self._events
        self._events = []
        return events

    def _feed(self, data: bytes) -> None:
        """``receive_data``: buffer and process ``data``; peer misbehaviour ends in
        :meth:`_fail`; raises :class:`InvalidStateError` after a hand-over."""
        if self._done:
            if self._handed_over:
                raise InvalidStateError(self._HANDED_OVER)
            return
        if not data:
            return
        self._buffer += data
        try:
            self._process()
        except P2PError as exc:
            self._fail(exc)

    def _finish(self, event: E | None = None, *, handed_over: bool = False) -> None:
        """End the machine: drop unparsed input, then emit ``event`` if there is one.

        ``handed_over``: later bytes belong to whatever follows (read any leftover out
        of ``_buffer`` before calling).
        """
        self._buffer.clear()
        self._done = True
        self._handed_over = handed_over
        if event is not None:
            self._events.append(event)

    def _process(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _fail(self, error: P2PError) -> None:  # pragma: no cover - overridden
        raise NotImplementedError
