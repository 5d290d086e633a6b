"""The examples run as documented (as the seed's did): ping-pong in process, the dynamic
firewall as two processes typed at through stdin pipes.  mDNS stays off (no multicast on
the host): ping-pong never turns it on, the dynamic firewall gets ``--no-mdns``."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aiop2p import FirewallRules, Framing, KeyPair, Network, RemoteError, ResultCode

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LINE_CAP = 20.0
"""Seconds to wait for one expected output line."""


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered as a script is (as __main__): msgspec resolves a Struct's string
    # annotations in the module its class names.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_ping_pong(capsys: pytest.CaptureFixture[str]) -> None:
    result = await load("ping_pong").main()
    assert result is None  # Pong is JSON null
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == sorted(
        [
            "[Alice] Sending Ping to Bob.",
            "[Alice] Result: Ok(Pong).",
            "[Bob] Received Ping from Alice.",
            "[Bob] Sending Pong back to Alice.",
        ]
    )
    assert lines[0] == "[Alice] Sending Ping to Bob."
    assert lines[-1] == "[Alice] Result: Ok(Pong)."
    assert lines.index("[Bob] Received Ping from Alice.") < lines.index(
        "[Bob] Sending Pong back to Alice."
    )


async def test_ping_pong_as_a_script() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "ping_pong.py"), stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert "[Alice] Result: Ok(Pong)." in out.decode().splitlines()


class Terminal:
    """One ``dynamic_firewall.py`` process: type lines, wait for printed ones."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[str] = []

    async def expect(self, predicate: str) -> str:
        """The next line containing ``predicate`` (earlier lines are kept in ``seen``)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(LINE_CAP):
            while True:
                raw = await self.proc.stdout.readline()
                assert raw, f"exited; printed: {self.seen}"
                line = raw.decode().rstrip("\n")
                self.seen.append(line)
                if predicate in line:
                    return line

    async def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def quit(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        async with asyncio.timeout(LINE_CAP):
            return await self.proc.wait()


@asynccontextmanager
async def terminal(*args: str) -> AsyncIterator[Terminal]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "dynamic_firewall.py"), "--no-mdns",
        "--listen", "/ip4/127.0.0.1/tcp/0", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield Terminal(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def two_terminals(stack: AsyncExitStack) -> tuple[Terminal, Terminal, str, str]:
    """T2 started first; T1 told T2's address (no mDNS).  Returns T1, T2 and their ids."""
    t2 = await stack.enter_async_context(terminal())
    t2_id = (await t2.expect("Local Peer Id: ")).split(": ")[1]
    t2_addr = (await t2.expect("Listening on ")).split(" ")[2]
    t1 = await stack.enter_async_context(terminal("--connect", t2_addr))
    t1_id = (await t1.expect("Local Peer Id: ")).split(": ")[1]
    await t1.expect("Send a request:")
    return t1, t2, t1_id, t2_id


async def test_dynamic_firewall_ask_then_reply() -> None:
    async with AsyncExitStack() as stack:
        t1, t2, t1_id, t2_id = await two_terminals(stack)
        await t1.type(f'-p {t2_id} -m "test message"')
        await t2.expect(f"Peer {t1_id} connected. Allow requests from them?: (yes/no/ask/ping)")
        await t2.type("sure")  # invalid: asked again
        await t2.expect("Invalid input. Please enter one of the following: yes, no, ask, ping")
        await t2.type("ask")
        await t2.expect(f"Received Request with type Message from peer {t1_id}. Permit?: (yes/no)")
        await t2.type("yes")
        await t2.expect(f"Received Message from peer {t1_id}:")
        assert await t2.expect('"test message".') == '"test message".'  # quotes kept (seed)
        await t2.type("test response")
        await t2.expect("Sent message back.")
        assert await t1.expect("Response") == "Response: test response"

        # The rule "ask" stays: a ping is approved on its own; "no" rejects it.
        await t1.type(f"-p {t2_id}")
        await t2.expect("Received Request with type Ping")
        await t2.type("yes")
        await t2.expect(f"Received Ping from peer {t1_id}.")
        await t2.expect("Sent Pong back.")
        assert await t1.expect("Pong") == "Pong"
        await t1.type(f"-p {t2_id}")
        await t2.expect("Received Request with type Ping")
        await t2.type("no")
        assert (await t1.expect("Request failed")).startswith("Request failed: ")

        # Typing mistakes on T1.
        await t1.type("-m hello")
        await t1.expect('Please include a target via "-p <peer-id>"')
        await t1.type("-p not-a-peer-id")
        await t1.expect("Invalid Peer Id")
        assert await t1.quit() == 0
        assert await t2.quit() == 0


async def test_dynamic_firewall_ping_rule_rejects_messages() -> None:
    async with AsyncExitStack() as stack:
        t1, t2, t1_id, t2_id = await two_terminals(stack)
        await t1.type(f'-p {t2_id} -m "test message"')
        await t2.expect(f"Peer {t1_id} connected.")
        await t2.type("ping")
        assert (await t1.expect("Request failed")).startswith("Request failed: ")
        await t1.type(f"-p {t2_id}")  # a ping is allowed without asking
        await t2.expect(f"Received Ping from peer {t1_id}.")
        assert await t1.expect("Pong") == "Pong"
        assert not any("Permit?" in line for line in t2.seen)


async def test_dynamic_firewall_three_bad_answers_reject() -> None:
    async with AsyncExitStack() as stack:
        t1, t2, t1_id, t2_id = await two_terminals(stack)
        await t1.type(f"-p {t2_id}")
        await t2.expect(f"Peer {t1_id} connected.")
        for answer in ("a", "b", "c"):
            await t2.type(answer)
        await t2.expect("Invalid input. Aborting.")
        assert (await t1.expect("Request failed")).startswith("Request failed: ")


async def test_relay_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert await load("relay").main() == {"hello": "Bob"}
    out = capsys.readouterr().out
    assert "/p2p-circuit/p2p/" in out
    assert "[Alice] Got {'hello': 'Alice'} through the relay." in out
    assert "[Bob] Reply: {'hello': 'Bob'}" in out


async def test_typed_kv_example(capsys: pytest.CaptureFixture[str]) -> None:
    module = load("typed_kv")
    replies = await module.main()
    assert replies == [
        module.Reply(True),
        module.Reply(True),
        module.Reply(True, 5),
        module.Reply(True, keys=["fruit:apple", "fruit:fig"]),
    ]
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "Get(key='fruit:fig') -> Reply(ok=True, value=5, keys=[])"
    assert lines[-2:] == [
        "wrong shape -> refused",
        "server: The request could not be read or decoded",
    ]


# -- the tutorial: a key-value store behind a relay (docs/tutorial.md) ---------------------

KV = EXAMPLES / "kv_store"
AIOP2P = Path(sys.executable).with_name("aiop2p")


@asynccontextmanager
async def process(*args: str, cwd: Path | None = None) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


async def first_line(proc: asyncio.subprocess.Process, predicate: str) -> str:
    assert proc.stdout is not None and proc.stderr is not None
    async with asyncio.timeout(LINE_CAP):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                pytest.fail(f"exited: {(await proc.stderr.read()).decode()}")
            if predicate in line:
                return line.strip()


async def kv_client(server: str, *words: str, key: Path | None = None) -> list[str]:
    args = [sys.executable, str(KV / "client.py"), server]
    args += ["--key", str(key)] if key is not None else []
    async with process(*args, *words) as proc:
        async with asyncio.timeout(LINE_CAP):
            out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode().splitlines()


@pytest.mark.timeout(120)
async def test_kv_store_tutorial(tmp_path: Path) -> None:
    """The relay (``aiop2p relay``), the server reachable only through it, and three
    clients, each a process as the tutorial runs them, on loopback."""
    writer_key = tmp_path / "writer.key"
    writer = KeyPair.load_or_generate(writer_key).peer_id
    cli = [str(AIOP2P)] if AIOP2P.exists() else [sys.executable, "-m", "aiop2p"]
    relay_cmd = [*cli, "relay", "--json", "--no-dht", "--listen", "/ip4/127.0.0.1/tcp/0"]
    async with process(*relay_cmd, "--key", str(tmp_path / "relay.key")) as relay:
        relay_addr = json.loads(await first_line(relay, '"address"'))["address"]
        server_cmd = [sys.executable, str(KV / "server.py"), relay_addr, "--writer", str(writer)]
        async with process(*server_cmd) as server:
            circuit = (await first_line(server, "serving at ")).split()[-1]
            assert circuit.startswith(relay_addr + "/p2p-circuit/p2p/")  # only via the relay

            ops = ["put", "fruit", "apple", "put", "veg", "leek", "get", "fruit"]
            ops += ["delete", "veg", "get", "veg", "delete", "veg", "put", "nut", "pecan"]
            ops += ["range", "a", "z", "range", "g", "z", "range", "x", "z"]
            fruit, nut = '{"key":"fruit","value":"apple"}', '{"key":"nut","value":"pecan"}'
            assert await kv_client(circuit, *ops, key=writer_key) == [
                '{"ok":true,"value":null,"error":null}',
                '{"ok":true,"value":null,"error":null}',
                '{"ok":true,"value":"apple","error":null}',
                '{"ok":true,"value":null,"error":null}',
                '{"ok":false,"value":null,"error":null}',
                '{"ok":false,"value":null,"error":null}',
                '{"ok":true,"value":null,"error":null}',
                fruit,  # range a z: the keys in order, veg deleted
                nut,
                nut,  # range g z; range x z streams nothing
            ]
            # A reader: the server's firewall answer lets it get and range, not put or delete.
            reader = await kv_client(circuit, "get", "fruit", "put", "fruit", "pear", "delete",
                                     "fruit", "range", "", "z")  # fmt: skip
            assert reader[0] == '{"ok":true,"value":"apple","error":null}'
            assert all(line.startswith("refused: ") for line in reader[1:3]), reader
            assert reader[3:] == [fruit, nut]
            # A peer without the typed codec: a range it cannot be sent is answered
            # INVALID_REQUEST, naming the field; one within bounds streams as above.
            raw: Network[Any, Any] = Network(firewall=FirewallRules.allow_none(), mdns=None)
            async with raw:
                ranges = raw.add_protocol("/kv/range/1.0.0", framing=Framing.CHUNKED)
                bad = {"type": "Range", "start": "k" * 129, "end": "z"}
                with pytest.raises(RemoteError) as refused:
                    async for _ in ranges.request_stream(circuit, bad, timeout=LINE_CAP):
                        pytest.fail("an entry for a range the server cannot read")
                assert refused.value.code is ResultCode.INVALID_REQUEST
                assert "$.start" in refused.value.message
                good = {"type": "Range", "start": "a", "end": "z", "limit": 1}
                got = [e async for e in ranges.request_stream(circuit, good, timeout=LINE_CAP)]
                assert got == [{"key": "fruit", "value": "apple"}]
            # Another reader, the CLI: the typed request is plain JSON on the wire.
            get = json.dumps({"type": "Get", "key": "fruit"})
            async with process(*cli, "send", circuit, get, "--protocol", "/kv/1.0.0") as send:
                async with asyncio.timeout(LINE_CAP):
                    out, err = await send.communicate()
            assert send.returncode == 0, err.decode()
            assert json.loads(out) == {"ok": True, "value": "apple", "error": None}

        # The same store as a handler served by the command line (docs/tutorial.md).
        serve_cmd = [*cli, "serve", "--json", "--no-mdns", "--handler", "kv_json:handle"]
        serve_cmd += ["--protocol", "/kv/1.0.0", "--relay", relay_addr, "--allow-peer"]
        serve_cmd += [str(writer), "--listen", "/ip4/127.0.0.1/tcp/0"]
        serve_cmd += ["--key", str(tmp_path / "cli-server.key")]
        async with process(*serve_cmd, cwd=KV) as served:
            circuit = json.loads(await first_line(served, '"relayed"'))["address"]
            for request, expected in (
                ({"type": "Put", "key": "fruit", "value": "fig"}, {"ok": True}),
                ({"type": "Get", "key": "fruit"}, {"ok": True, "value": "fig"}),
            ):
                args = [circuit, json.dumps(request), "--protocol", "/kv/1.0.0"]
                async with process(*cli, "send", *args, "--key", str(writer_key)) as send:
                    async with asyncio.timeout(LINE_CAP):
                        out, err = await send.communicate()
                assert send.returncode == 0, err.decode()
                assert json.loads(out) == expected


def test_tutorial_excerpts_are_the_examples() -> None:
    """Each code block of docs/tutorial.md introduced by ``<!-- FILE -->`` is a verbatim
    part of that file, so the tutorial shows the code the test above runs."""
    root = EXAMPLES.parent
    text = (root / "docs" / "tutorial.md").read_text()
    blocks = re.findall(r"<!-- (\S+) -->\n```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 6
    for path, block in blocks:
        assert block in (root / path).read_text(), f"{path}:\n{block}"
