"""Installs the services every node runs by default (per its config)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from ..protocols.perf import PERF_PROTOCOL_ID
from ..protocols.ping import PING_PROTOCOL_ID
from .identify import IdentifyService
from .perf import serve_perf
from .ping import serve_ping

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["install_builtin_services"]


def install_builtin_services(node: Node) -> None:
    config = node.config
    if config.enable_identify:
        node.identify = IdentifyService(node)
    if config.enable_ping:
        node.set_stream_handler(
            PING_PROTOCOL_ID, partial(serve_ping, idle_timeout=config.protocol_idle_timeout)
        )
    if config.enable_perf:
        node.set_stream_handler(
            PERF_PROTOCOL_ID, partial(serve_perf, idle_timeout=config.protocol_idle_timeout)
        )
