"""Firewall questions answered on the terminal (``aiop2p serve --default-rule ask``).

A peer without a rule is asked about once (``yes``/``no``/``ask``/``ping``, as the seed's
dynamic-firewall example); a peer whose rule is ``ask`` is asked about every request
(``yes``/``no``).  Each question gets up to :data:`MAX_ATTEMPTS` answers before it is
rejected, and a closed stdin (a daemon, ``</dev/null``) answers "no": the firewall never
opens because nobody is there to say yes.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, Final

from ..network import ApprovalRequest, FirewallRequest, PeerRuleQuery
from ..network.firewall import Rule
from ._common import Output

__all__ = ["MAX_ATTEMPTS", "RULE_CHOICES", "FirewallPrompter", "LineReader", "is_ping"]

MAX_ATTEMPTS: Final = 3
MAX_LINE_BYTES: Final = 64 * 1024
"""A longer stdin line is cut there (an answer is a word)."""


def is_ping(view: object) -> bool:
    """The ``ping`` rule's test: the request is the JSON string ``"Ping"`` — the seed
    example's ``Request::Ping`` on the wire."""
    return view == "Ping" or view == "ping"


RULE_CHOICES: Final[dict[str, Rule[Any]]] = {
    "yes": Rule.allow_all(),
    "no": Rule.reject_all(),
    "ask": Rule.ask(),
    "ping": Rule.restricted(is_ping, name="ping"),
}
APPROVAL_CHOICES: Final[dict[str, bool]] = {"yes": True, "no": False}


class LineReader:
    """Lines of a file descriptor (stdin), read by a daemon thread.

    A thread on ``os.read`` works for ttys, pipes, files and ``/dev/null`` alike, never
    holds a lock that interpreter shutdown needs (unlike ``sys.stdin``), and never keeps
    the process alive.  After end of file every read returns ``None``.
    """

    def __init__(self, fd: int = 0) -> None:
        self._fd = fd
        self._queue: asyncio.Queue[str | None] | None = None
        self._eof = False

    def _start(self) -> asyncio.Queue[str | None]:
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def put(item: str | None) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop closed: nobody listens any more
                return False
            return True

        def pump() -> None:
            pending = b""
            while True:
                try:
                    chunk = os.read(self._fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    if pending:
                        put(pending.decode(errors="replace"))
                    put(None)
                    return
                *lines, pending = (pending + chunk).split(b"\n")
                pending = pending[:MAX_LINE_BYTES]
                for line in lines:
                    if not put(line[:MAX_LINE_BYTES].decode(errors="replace")):
                        return

        threading.Thread(target=pump, name="aiop2p stdin", daemon=True).start()
        return queue

    async def readline(self) -> str | None:
        """The next line without its newline, or ``None`` at end of file."""
        if self._eof:
            return None
        if self._queue is None:
            self._queue = self._start()
        line = await self._queue.get()
        if line is None:
            self._eof = True
        return line


class FirewallPrompter:
    """A ``firewall_handler`` for :class:`~aiop2p.network.Network` that asks a person.

    Questions are asked one at a time, in arrival order; one that ended meanwhile (its
    ``firewall_timeout`` passed, its connection closed) is skipped.
    """

    def __init__(
        self,
        out: Output,
        reader: LineReader | None = None,
        *,
        show: Any = repr,
    ) -> None:
        self.out = out
        self.reader = reader if reader is not None else LineReader()
        self._show = show
        self._lock = asyncio.Lock()

    async def __call__(self, request: FirewallRequest) -> None:
        async with self._lock:
            if request.answered:
                return
            if isinstance(request, PeerRuleQuery):
                await self._ask_rule(request)
            else:
                await self._ask_approval(request)

    async def _ask_rule(self, query: PeerRuleQuery) -> None:
        peer = str(query.peer)
        choices = list(RULE_CHOICES)
        self.out.notice(
            f"Peer {peer} connected. Allow requests from them?: ({'/'.join(choices)})",
            prompt="rule",
            peer_id=peer,
            choices=choices,
        )
        choice = await self._read_choice(choices, peer=peer)
        rule = RULE_CHOICES["no" if choice is None else choice]
        if not query.answer(rule):
            self._too_late(peer)
            return
        self.out.notice(
            f"Rule for peer {peer}: {choice or 'no'}", decision="rule", peer_id=peer,
            rule=choice or "no",
        )  # fmt: skip

    async def _ask_approval(self, approval: ApprovalRequest[Any]) -> None:
        peer = str(approval.peer)
        choices = list(APPROVAL_CHOICES)
        self.out.notice(
            f"Received request {self._show(approval.request)} from peer {peer}. "
            f"Permit?: ({'/'.join(choices)})",
            prompt="approve",
            peer_id=peer,
            request_id=int(approval.request_id),
            request=approval.request,
            choices=choices,
        )
        choice = await self._read_choice(choices, peer=peer)
        approved = choice is not None and APPROVAL_CHOICES[choice]
        if not approval.approve(approved):
            self._too_late(peer)
            return
        self.out.notice(
            f"Request {int(approval.request_id)} from peer {peer}: "
            f"{'permitted' if approved else 'rejected'}",
            decision="approve",
            peer_id=peer,
            request_id=int(approval.request_id),
            approved=approved,
        )

    async def _read_choice(self, choices: list[str], *, peer: str) -> str | None:
        """A valid answer, or ``None`` (reject) after MAX_ATTEMPTS bad ones or at EOF."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            line = await self.reader.readline()
            if line is None:
                self.out.notice(
                    "No input (stdin is closed): answering no.", prompt_result="eof",
                    peer_id=peer,
                )  # fmt: skip
                return None
            answer = line.strip().lower()
            if answer in choices:
                return answer
            if attempt < MAX_ATTEMPTS:
                self.out.notice(
                    f"Invalid input. Please enter one of the following: {', '.join(choices)}",
                    prompt_result="invalid",
                    peer_id=peer,
                    choices=choices,
                )
        self.out.notice("Invalid input. Aborting.", prompt_result="aborted", peer_id=peer)
        return None

    def _too_late(self, peer: str) -> None:
        self.out.notice(
            f"Too late: the question about peer {peer} already ended (timeout or disconnect).",
            prompt_result="expired",
            peer_id=peer,
        )
