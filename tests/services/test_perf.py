"""Perf: the byte counts both ways, and the server's bound on what may be asked of it."""

from __future__ import annotations

import pytest

from aiop2p.errors import StreamResetError
from aiop2p.node import Node
from aiop2p.protocols.perf import PERF_PROTOCOL_ID, encode_perf_header
from aiop2p.services.perf import MAX_PERF_DOWNLOAD_SIZE


async def test_perf_moves_the_requested_bytes(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    result = await a.perf(
        b.listen_addrs[0].with_peer_id(b.peer_id), upload=3 << 20, download=5 << 20
    )
    assert result.upload_bytes == 3 << 20 and result.download_bytes == 5 << 20
    assert result.upload_mib_s > 0 and result.download_mib_s > 0


async def test_progress_is_told_the_bytes_moved_so_far(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    seen: list[tuple[int, int]] = []
    target = b.listen_addrs[0].with_peer_id(b.peer_id)
    await a.perf(target, upload=1 << 20, download=3 << 19, progress=lambda *n: seen.append(n))
    assert seen == sorted(seen) and len(seen) >= 4  # 256 KiB chunks: 4 uploaded, more read
    assert seen[3] == (1 << 20, 0)  # the upload first, whole
    assert seen[-1] == (1 << 20, 3 << 19)


async def test_upload_only_counts_all_time_as_upload(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    result = await a.perf(b.listen_addrs[0].with_peer_id(b.peer_id), upload=1 << 20, download=0)
    assert result.download_seconds == 0 and result.download_mib_s == 0.0
    assert result.upload_seconds > 0


async def test_a_download_above_the_bound_is_refused(node_pair: tuple[Node, Node]) -> None:
    a, b = node_pair
    stream = await a.new_stream(b.listen_addrs[0].with_peer_id(b.peer_id), PERF_PROTOCOL_ID)
    await stream.write(encode_perf_header(MAX_PERF_DOWNLOAD_SIZE + 1))
    await stream.close()
    with pytest.raises(StreamResetError):
        await stream.read()
