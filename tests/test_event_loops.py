"""aiop2p runs on any asyncio event loop: the tests in tests/conftest.py's UVLOOP_MODULES run
on uvloop as well as on the default loop, and these check that they really do."""

from __future__ import annotations

import asyncio
import sys

import pytest

from aiop2p.node import Node

from .conftest import UVLOOP_MODULES

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the dev extra except on Windows
    uvloop = None  # type: ignore[assignment]

pytestmark = pytest.mark.uvloop


def test_uvloop_is_installed_where_it_can_be() -> None:
    """uvloop is in the dev extra: without it the uvloop half of the suite would not run."""
    assert uvloop is not None or sys.platform == "win32"


def test_the_listed_modules_exist(pytestconfig: pytest.Config) -> None:
    missing = [m for m in UVLOOP_MODULES if not (pytestconfig.rootpath / m).is_file()]
    assert not missing


async def test_each_parameter_runs_on_its_loop(request: pytest.FixtureRequest) -> None:
    loop = asyncio.get_running_loop()
    if request.node.callspec.id == "uvloop":
        assert uvloop is not None
        assert isinstance(loop, uvloop.Loop)
    else:
        assert request.node.callspec.id == "asyncio"
        assert type(loop).__module__.startswith("asyncio")


async def test_a_dial_and_a_ping_over_tcp_and_ws() -> None:
    """The transports uvloop hands to protocols are not asyncio.Transport subclasses."""
    async with Node() as a, Node() as b:
        for listen in ("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/0/ws"):
            (addr,) = await b.listen(listen)
            conn = await a.dial(addr, force=True)
            assert len(await a.ping(conn, count=2)) == 2
            await conn.close()
