"""What ``aiop2p serve`` says first: where its identity is stored, and the exact commands
to try against it from another terminal (``make run`` shows both before anything else)."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..identity import PeerId
from ..multiaddr import Multiaddr
from ..network import DEFAULT_PROTOCOL
from ..network.firewall import FirewallRules, RuleKind
from ._common import Output

__all__ = ["announce_identity", "command_name", "suggest_commands", "try_address"]

EXAMPLE_REQUEST = '"hello"'
"""The JSON value the suggested ``send`` carries."""


def command_name(argv0: str | None = None) -> str:
    """How the user can run ``aiop2p`` again: ``aiop2p`` when that is what runs on the
    PATH, the script's path as typed otherwise (``.venv/bin/aiop2p`` under ``make run``),
    ``python -m aiop2p`` with this interpreter for ``-m``."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    name = Path(argv0).name
    if name == "__main__.py":
        return f"{shlex.quote(sys.executable)} -m aiop2p"
    if name != "aiop2p":
        return "aiop2p"  # embedded (the tests run the command in-process)
    found = shutil.which("aiop2p")
    if found is not None and os.path.realpath(found) == os.path.realpath(argv0):
        return "aiop2p"
    return shlex.quote(argv0)


def announce_identity(out: Output, key_file: Path, peer: PeerId) -> None:
    out.notice(
        f"aiop2p serve: identity {peer}, stored in {key_file}",
        identity=str(key_file),
        peer_id=str(peer),
    )


def try_address(addrs: Sequence[Multiaddr]) -> Multiaddr | None:
    """The address to suggest: a loopback one (the other terminal is on this host), else
    the first."""
    for addr in addrs:
        ip = addr.ip_address
        if ip is not None and ip.is_loopback:
            return addr
    return addrs[0] if addrs else None


def suggest_commands(
    out: Output,
    addrs: Sequence[Multiaddr],
    rules: FirewallRules[Any],
    *,
    echo: bool,
    protocol: str = DEFAULT_PROTOCOL,
) -> None:
    """In text mode, on stderr: ``ping`` (always answered) and, when the firewall may let
    a fresh identity's request through to an echo, ``send``.  Nothing with ``--json``:
    its reader is a program, which has the addresses already."""
    addr = try_address(addrs)
    if out.as_json or addr is None:
        return
    command, target = command_name(), shlex.quote(str(addr))
    lines = [f"  {command} ping {target}"]
    default = rules.get_default_rule()
    kind = RuleKind.ASK if default is None else default.kind
    if echo and kind in (RuleKind.ALLOW_ALL, RuleKind.ASK):
        send = f"  {command} send {target} {shlex.quote(EXAMPLE_REQUEST)}"
        if protocol != DEFAULT_PROTOCOL:
            send += f" --protocol {shlex.quote(protocol)}"
        lines.append(send + ("   (answer the question here)" if kind is RuleKind.ASK else ""))
    out.notice("\n".join(["aiop2p serve: try it from another terminal:", *lines]))
