"""An interactive peer whose firewall asks you (the seed's dynamic-firewall example).

Run it in two terminals::

    python examples/dynamic_firewall.py                     # terminal 1: prints its peer id
    python examples/dynamic_firewall.py                     # terminal 2
    -p <peer id of terminal 1> -m "hello"                   # typed in terminal 2

mDNS finds the other peer on the LAN; with ``--no-mdns`` give its address instead
(``--connect /ip4/.../tcp/.../p2p/<id>``).  No rule is set at start (as the seed's docs say;
its code set ``AllowAll`` by mistake: docs/compat.md, "compat: the dynamic firewall example
asks"), so the first connection from a peer asks for
its rule: ``yes`` (allow all), ``no`` (reject all), ``ask`` (approve each request) or
``ping`` (only pings).  Each question allows 3 attempts, then rejects.  Stdin may be a
pipe: every prompt reads the next line, and end of input ends the program.

Timing (the same entry's other half): the original offered 20 s to type a reply while requests timed
out after 10 s.  Here a request may take ``REQUEST_TIMEOUT`` (45 s), enough for a rule
answer and an approval (``firewall_timeout``, 10 s each) and a reply (``REPLY_TIMEOUT``, 20 s).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from aiop2p import (
    ApprovalRequest,
    ChannelConfig,
    ChannelSinkConfig,
    FirewallRequest,
    FirewallRules,
    InboundRequest,
    InvalidPeerIdError,
    MdnsConfig,
    Multiaddr,
    Network,
    P2PError,
    PeerId,
    PeerRuleQuery,
    PermissionEnum,
    Rule,
)

REQUEST_TIMEOUT: Final = 45.0
FIREWALL_TIMEOUT: Final = 10.0
REPLY_TIMEOUT: Final = 20.0
MAX_ATTEMPTS: Final = 3

# Wire values, as the seed's serde JSON: `Request::Ping` is "Ping", `Request::Message(s)` is
# {"Message": s}; likewise `Response::Pong` and `Response::Message(s)`.
Request = str | dict[str, str]
Response = str | dict[str, str]


class RequestPermission(PermissionEnum):
    """The firewall's view of a request: only its kind (bit 0 Ping, bit 1 Message)."""

    Ping = 0
    Message = 1


def request_kind(request: Request) -> RequestPermission:
    if request == "Ping":
        return RequestPermission.Ping
    if isinstance(request, dict) and isinstance(request.get("Message"), str):
        return RequestPermission.Message
    raise ValueError(f"not a Request: {request!r}")  # the Network rejects it as invalid


RULES: Final[dict[str, Rule[Any]]] = {
    "yes": Rule.allow_all(),
    "no": Rule.reject_all(),
    "ask": Rule.ask(),
    "ping": Rule.permissions([RequestPermission.Ping]),
}
APPROVALS: Final[dict[str, bool]] = {"yes": True, "no": False}

USAGE = """
Send a request:   -p <peer-id> [-m "message"]   (without -m: a Ping)
Quit:             quit  (or end of input)
"""
PEER_RE = re.compile(r"-p\s+(\S+)")
VALID_PEER_RE = re.compile(r"[A-Za-z0-9]{32,64}")
MESSAGE_RE = re.compile(r'-m\s+("[^"]*"|\S+)')


def say(text: str) -> None:
    print(text, flush=True)


class Lines:
    """Stdin lines, from a daemon thread (works for terminals and pipes alike).

    The main loop reads commands; while a question is on screen (:meth:`question`) every
    line typed is an answer to it (:meth:`answer`), even one typed ahead.
    """

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def put(item: str | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(self.queue.put_nowait, item)

        def pump() -> None:
            pending = b""
            while True:
                try:
                    chunk = os.read(0, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    put(line.decode(errors="replace").rstrip("\r"))
            if pending:
                put(pending.decode(errors="replace"))
            put(None)

        threading.Thread(target=pump, name="stdin", daemon=True).start()
        self.lock = asyncio.Lock()  # one question on the terminal at a time
        self.asking = False
        self.answers: collections.deque[str] = collections.deque()
        self.waiter: asyncio.Future[str | None] | None = None
        self.closed = False

    @contextlib.asynccontextmanager
    async def question(self) -> AsyncIterator[None]:
        async with self.lock:
            self.asking = True
            try:
                yield
            finally:
                self.asking = False
                self.answers.clear()

    async def answer(self, seconds: float) -> str | None:
        """The next line typed for the current question; ``None`` on timeout or end of
        input."""
        if self.answers:
            return self.answers.popleft()
        if self.closed:
            return None
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(seconds):
                return await self.waiter
        except TimeoutError:
            return None
        finally:
            self.waiter = None

    async def dispatch(self, command: Callable[[str], Awaitable[bool]]) -> None:
        """Route each line to the question on screen, else to ``command``."""
        while True:
            line = await self.queue.get()
            if line is None:
                self.closed = True
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)
                return
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(line)
            elif self.asking:
                self.answers.append(line)
            elif not await command(line):
                return


class Peer:
    def __init__(self, net: Network[Request, Response], lines: Lines) -> None:
        self.net = net
        self.lines = lines
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- typed commands ------------------------------------------------------------------

    async def command(self, line: str) -> bool:
        """Handle one typed line; False to quit."""
        line = line.strip()
        if not line:
            return True
        if line in ("quit", "exit"):
            return False
        peer_match = PEER_RE.search(line)
        if peer_match is None:
            say('Please include a target via "-p <peer-id>"')
            return True
        try:
            if not VALID_PEER_RE.fullmatch(peer_match.group(1)):
                raise InvalidPeerIdError(peer_match.group(1))
            peer = PeerId.from_string(peer_match.group(1))
        except InvalidPeerIdError:
            say("Invalid Peer Id")
            return True
        message = MESSAGE_RE.search(line)
        request: Request = {"Message": message.group(1)} if message else "Ping"
        self.spawn(self.send(peer, request))
        return True

    async def send(self, peer: PeerId, request: Request) -> None:
        try:
            response = await self.net.send_request(peer, request)
        except P2PError as exc:
            say(f"Request failed: {exc}")
            return
        if isinstance(response, dict) and "Message" in response:
            say(f"Response: {response['Message']}")
        else:
            say(str(response))  # "Pong"

    # -- the firewall asks (the iterator style: firewall_requests()) ---------------------

    async def firewall(self) -> None:
        async for question in self.net.firewall_requests():
            self.spawn(self.ask(question))

    async def ask(self, question: FirewallRequest) -> None:
        async with self.lines.question():
            if question.answered:
                return
            if isinstance(question, PeerRuleQuery):
                say(
                    f"Peer {question.peer} connected. Allow requests from them?: "
                    f"({'/'.join(RULES)})"
                )
                choice = await self.choose(list(RULES))
                if choice is None:
                    question.drop()
                else:
                    question.answer(RULES[choice])
            else:
                assert isinstance(question, ApprovalRequest)
                say(
                    f"Received Request with type {question.request.name} from peer "
                    f"{question.peer}. Permit?: ({'/'.join(APPROVALS)})"
                )
                choice = await self.choose(list(APPROVALS))
                question.approve(choice is not None and APPROVALS[choice])

    async def choose(self, choices: list[str]) -> str | None:
        for attempt in range(MAX_ATTEMPTS):
            line = await self.lines.answer(FIREWALL_TIMEOUT)
            if line is None:
                return None
            if line.strip().lower() in choices:
                return line.strip().lower()
            if attempt < MAX_ATTEMPTS - 1:
                say(f"Invalid input. Please enter one of the following: {', '.join(choices)}")
        say("Invalid input. Aborting.")
        return None

    # -- requests the firewall let through -----------------------------------------------

    async def serve(self) -> None:
        async for request in self.net.requests():
            self.spawn(self.answer(request))

    async def answer(self, inbound: InboundRequest[Request, Response]) -> None:
        request = inbound.request
        if request == "Ping":
            say(f"Received Ping from peer {inbound.peer}.")
            try:
                await inbound.respond("Pong")
                say("Sent Pong back.")
            except P2PError:
                say("Sending Pong back failed.")
            return
        assert isinstance(request, dict)
        async with self.lines.question():
            say(f"Received Message from peer {inbound.peer}:\n{request['Message']}.")
            line = await self.lines.answer(REPLY_TIMEOUT)
        if line is None:
            say("Timeout sending a response.")
            inbound.drop()
            return
        try:
            await inbound.respond({"Message": line})
            say("Sent message back.")
        except P2PError:
            say("Sending message back failed.")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="/ip4/0.0.0.0/tcp/0", metavar="MULTIADDR")
    parser.add_argument(
        "--connect", action="append", default=[], metavar="MULTIADDR",
        help="a peer's address with /p2p/<id> (repeatable); needed with --no-mdns",
    )  # fmt: skip
    parser.add_argument(
        "--mdns", action=argparse.BooleanOptionalAction, default=True, help="LAN discovery"
    )
    args = parser.parse_args(argv)

    net: Network[Request, Response] = Network(
        firewall=FirewallRules.empty(),  # no rule: every new peer is asked about
        firewall_view=request_kind,
        firewall_channel_capacity=10,
        requests_channel=ChannelConfig(10, ChannelSinkConfig.BLOCK),
        request_timeout=REQUEST_TIMEOUT,
        firewall_timeout=FIREWALL_TIMEOUT,
        mdns=MdnsConfig() if args.mdns else None,
    )
    async with net:
        for text in args.connect:
            addr = Multiaddr(text)
            if addr.peer_id is None:
                parser.error(f"--connect needs /p2p/<peer id>: {text}")
            net.add_address(addr.peer_id, addr.without_peer_id())
        await net.start_listening(args.listen)
        say(f"\nLocal Peer Id: {net.peer_id}")
        for listener in net.listeners():
            for addr in listener.addrs:
                say(f"Listening on {addr.with_peer_id(net.peer_id)}")
        say(USAGE)
        lines = Lines()
        peer = Peer(net, lines)
        background = [
            asyncio.get_running_loop().create_task(peer.firewall()),
            asyncio.get_running_loop().create_task(peer.serve()),
        ]
        try:
            await lines.dispatch(peer.command)
            if peer.tasks:  # end of input: let running requests finish
                await asyncio.wait(set(peer.tasks), timeout=REQUEST_TIMEOUT)
        finally:
            for task in [*background, *peer.tasks]:
                task.cancel()
            await asyncio.gather(*background, *peer.tasks, return_exceptions=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1:]))
