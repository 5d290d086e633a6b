"""Multiaddr text/binary codecs, vectors from the multiaddr spec, and the value-type API."""

from __future__ import annotations

import ipaddress
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiop2p.errors import InvalidMultiaddrError
from aiop2p.identity import KeyPair, PeerId
from aiop2p.multiaddr import (
    MAX_MULTIADDR_BYTES,
    MAX_MULTIADDR_TEXT_CHARS,
    PROTOCOL_CODES,
    Multiaddr,
    TcpHead,
)

ED_ID = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
ED_ID_MH = "0024080112202ffa35a99d3a3cfbb17bb7c1dc5561b18a8dcca4df38dc613ea859c37eb1336b"
QM_ID = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
QM_ID_CID = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"
CERTHASH = "uEiDDq4_xNyDorZBH3TlGazyJdOWSwvo4PUo5YHFMrvDE8g"


def test_codes_match_protocols_csv() -> None:
    # multiformats/multiaddr protocols.csv
    expected = {
        "ip4": 4, "tcp": 6, "udp": 273, "dccp": 33, "ip6": 41, "dns": 53, "dns4": 54,
        "dns6": 55, "dnsaddr": 56, "p2p": 421, "ipfs": 421, "tls": 448, "sni": 449,
        "quic-v1": 461, "webtransport": 465, "certhash": 466, "ws": 477, "wss": 478,
        "p2p-circuit": 290, "memory": 777,
    }  # fmt: skip
    for name, code in expected.items():
        assert PROTOCOL_CODES[name] == code, name


@pytest.mark.parametrize(
    ("text", "hex_bytes"),
    [
        # multiaddr test/multiaddr.feature and README examples
        ("/ip4/192.0.2.42/tcp/443", "04c000022a0601bb"),
        ("/ip4/127.0.0.1/udp/1234", "047f000001910204d2"),
        ("/ip4/127.0.0.1/tcp/4001", "047f000001060fa1"),
        ("/ip6/::1/tcp/4001", "29" + "00" * 15 + "01" + "060fa1"),
        ("/dns4/example.com/tcp/443/wss", "360b" + b"example.com".hex() + "0601bb" + "de03"),
        ("/dns/a/tcp/1/tls/sni/b/ws", "3501" + "61" + "060001" + "c003" + "c1030162" + "dd03"),
        ("/dnsaddr/bootstrap.libp2p.io", "3813" + b"bootstrap.libp2p.io".hex()),
        ("/ip4/1.2.3.4/tcp/1/p2p/" + ED_ID, "0401020304060001" + "a50326" + ED_ID_MH),
        ("/p2p-circuit", "a202"),
        # /memory: code 777, value a fixed 8-byte big-endian u64 (as rust-libp2p writes it)
        ("/memory/1234", "8906" + "00000000000004d2"),
        ("/memory/0", "8906" + "00" * 8),
        ("/memory/18446744073709551615/p2p/" + ED_ID, "8906" + "ff" * 8 + "a50326" + ED_ID_MH),
        (
            "/ip4/1.2.3.4/udp/1/quic-v1/webtransport/certhash/" + CERTHASH,
            "0401020304" + "91020001" + "cd03" + "d103" + "d20322"
            "1220c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2",
        ),
    ],
)
def test_known_vectors(text: str, hex_bytes: str) -> None:
    m = Multiaddr(text)
    assert m.to_bytes().hex() == hex_bytes
    assert str(m) == text
    back = Multiaddr.from_bytes(bytes.fromhex(hex_bytes))
    assert back == m
    assert str(back) == text
    assert Multiaddr.from_string(text) == m


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("/ipfs/" + ED_ID, "/p2p/" + ED_ID),
        ("/p2p/" + QM_ID_CID, "/p2p/" + QM_ID),
        ("/ip6/2001:0db8:0000::0001/tcp/1", "/ip6/2001:db8::1/tcp/1"),
        ("/ip6/::ffff:1.2.3.4/tcp/1", "/ip6/::ffff:102:304/tcp/1"),
        ("/ip4/1.2.3.4/tcp/0080", "/ip4/1.2.3.4/tcp/80"),
        ("/ip4/1.2.3.4/tcp/80/", "/ip4/1.2.3.4/tcp/80"),
        ("/certhash/z" + QM_ID, "/certhash/uEiCd_zsX10z004pQ2LY4PpLRgaEDlaXnOnJtzMvSG_bwuQ"),
        ("/", "/"),
    ],
)  # fmt: skip
def test_canonical_text(text: str, canonical: str) -> None:
    m = Multiaddr(text)
    assert str(m) == canonical
    assert Multiaddr(canonical) == m


def test_ipv6_mapped_round_trip() -> None:
    m = Multiaddr("/ip6/::ffff:1.2.3.4/tcp/1")
    assert Multiaddr(str(m)) == m


def test_constructor_forms() -> None:
    m = Multiaddr("/ip4/127.0.0.1/tcp/4001")
    assert Multiaddr(m) is m
    assert Multiaddr(m.to_bytes()) == m
    assert Multiaddr(bytearray(m.to_bytes())) == m
    assert Multiaddr(memoryview(m.to_bytes())) == m
    assert repr(m) == "Multiaddr('/ip4/127.0.0.1/tcp/4001')"
    with pytest.raises(InvalidMultiaddrError):
        Multiaddr(4001)  # type: ignore[arg-type]
    with pytest.raises(InvalidMultiaddrError):
        Multiaddr.from_string(b"/ip4/1.2.3.4")  # type: ignore[arg-type]


def test_value_semantics() -> None:
    a = Multiaddr("/ip4/127.0.0.1/tcp/4001")
    b = Multiaddr(bytes.fromhex("047f000001060fa1"))
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != Multiaddr("/ip4/127.0.0.1/tcp/4002")
    assert a != "/ip4/127.0.0.1/tcp/4001"
    with pytest.raises(AttributeError):
        a._bytes = b""
    assert pickle.loads(pickle.dumps(a)) == a


def test_components_and_lookup() -> None:
    m = Multiaddr(f"/ip4/10.0.0.1/tcp/4001/p2p/{QM_ID}/p2p-circuit/p2p/{ED_ID}")
    assert m.components() == (
        ("ip4", "10.0.0.1"),
        ("tcp", "4001"),
        ("p2p", QM_ID),
        ("p2p-circuit", None),
        ("p2p", ED_ID),
    )
    assert m.protocol_names() == ("ip4", "tcp", "p2p", "p2p-circuit", "p2p")
    assert m.value_for("p2p") == QM_ID  # first occurrence
    assert m.value_for("ipfs") == QM_ID
    assert m.value_for("udp") is None
    assert m.value_for("p2p-circuit") is None
    assert m.has_protocol("p2p-circuit") and not m.has_protocol("ws")
    assert m.peer_id == PeerId.from_string(ED_ID)  # last occurrence
    with pytest.raises(InvalidMultiaddrError, match="unknown multiaddr protocol"):
        m.value_for("nope")


def test_encapsulate_decapsulate() -> None:
    base = Multiaddr("/ip4/1.2.3.4/tcp/1")
    ws = base.encapsulate("/ws")
    assert str(ws) == "/ip4/1.2.3.4/tcp/1/ws"
    assert base / "/ws" == ws
    assert base / Multiaddr("/ws") == ws
    assert base.encapsulate("/") is base
    assert Multiaddr("/").encapsulate(base) == base
    assert str(ws.decapsulate("tcp")) == "/ip4/1.2.3.4"
    assert str(ws.decapsulate("/tcp/1")) == "/ip4/1.2.3.4"
    assert str(ws.decapsulate("/tcp/1/ws")) == "/ip4/1.2.3.4"
    assert ws.decapsulate("/tcp/2") is ws  # absent: unchanged
    assert ws.decapsulate("udp") is ws
    assert ws.decapsulate("/") is ws
    assert str(ws.decapsulate("ip4")) == "/"
    relayed = Multiaddr(f"/ip4/1.2.3.4/tcp/1/p2p/{QM_ID}/p2p-circuit/p2p/{ED_ID}")
    assert str(relayed.decapsulate("p2p")) == f"/ip4/1.2.3.4/tcp/1/p2p/{QM_ID}/p2p-circuit"
    assert str(relayed.decapsulate("p2p-circuit")) == f"/ip4/1.2.3.4/tcp/1/p2p/{QM_ID}"
    assert str(relayed.decapsulate(f"/p2p/{QM_ID}")) == "/ip4/1.2.3.4/tcp/1"
    assert relayed.decapsulate("ipfs") == relayed.decapsulate("p2p")
    with pytest.raises(InvalidMultiaddrError):
        ws.decapsulate("nope")
    with pytest.raises(InvalidMultiaddrError):
        ws.decapsulate("/nope")


def test_peer_id_helpers() -> None:
    pid = PeerId.from_string(ED_ID)
    base = Multiaddr("/ip4/1.2.3.4/tcp/1")
    assert base.peer_id is None
    full = base.with_peer_id(pid)
    assert str(full) == f"/ip4/1.2.3.4/tcp/1/p2p/{ED_ID}"
    assert full == Multiaddr(str(full))
    assert full.to_bytes() == Multiaddr(str(full)).to_bytes()
    assert full.peer_id == pid
    assert full.with_peer_id(pid) is full
    assert full.with_peer_id(ED_ID) is full
    assert base.with_peer_id(QM_ID).peer_id == PeerId.from_string(QM_ID)
    with pytest.raises(InvalidMultiaddrError, match="another peer id"):
        full.with_peer_id(PeerId.from_string(QM_ID))
    assert full.without_peer_id() == base
    assert base.without_peer_id() is base
    assert str(Multiaddr(f"/p2p/{ED_ID}").without_peer_id()) == "/"
    # A relay address: /p2p-circuit at the end has no own peer id.
    circuit = Multiaddr(f"/ip4/1.2.3.4/tcp/1/p2p/{QM_ID}/p2p-circuit")
    assert circuit.peer_id == PeerId.from_string(QM_ID)
    assert str(circuit.with_peer_id(pid)).endswith(f"/p2p-circuit/p2p/{ED_ID}")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty multiaddr"),
        ("ip4/1.2.3.4", "must start with '/'"),
        ("/foo/1", "unknown protocol 'foo'"),
        ("/ip4", "/ip4 needs a value"),
        ("/ip4/1.2.3.4/tcp", "/tcp needs a value"),
        ("/ip4/1.2.3", "invalid /ip4 value"),
        ("/ip4/256.0.0.1", "invalid /ip4 value"),
        ("/ip4/01.2.3.4", "invalid /ip4 value"),
        ("/ip4/::1", "invalid /ip4 value"),
        ("/ip6/1.2.3.4", "invalid /ip6 value"),
        ("/ip6/fe80::1%eth0", "ip6zone"),
        ("/ip6/::1::2", "invalid /ip6 value"),
        ("/ip4/1.2.3.4/tcp/65536", "out of range"),
        ("/ip4/1.2.3.4/tcp/-1", "invalid /tcp value"),
        ("/ip4/1.2.3.4/tcp/+1", "invalid /tcp value"),
        ("/ip4/1.2.3.4/tcp/1_0", "invalid /tcp value"),
        ("/ip4/1.2.3.4/tcp/\u0661", "invalid /tcp value"),
        ("/ip4/1.2.3.4/udp/x", "invalid /udp value"),
        ("/memory", "/memory needs a value"),
        ("/memory/18446744073709551616", "out of range"),
        ("/memory/-1", "invalid /memory value"),
        ("/memory/0x10", "invalid /memory value"),
        ("/memory/" + "1" * 21, "invalid /memory value"),
        ("/ip4/1.2.3.4//tcp/1", "empty protocol name"),
        ("/ip4/1.2.3.4/tcp/1//", "empty protocol name"),
        ("/dns4//tcp/1", "invalid /dns4 value"),
        ("/p2p/QmNotAPeerId", "invalid /p2p value"),
        ("/p2p/bafybeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe", "libp2p-key"),
        ("/certhash/uEiA", "multihash length does not match"),
        ("/certhash/xyz", "invalid /certhash value"),
        ("/certhash/u_____________w", "multihash: varint longer than 9 bytes"),
        ("/ws/1.2.3.4", "unknown protocol '1.2.3.4'"),
        ("/" + "ws/" * 3000, "longer than"),
    ],
)
def test_text_errors(text: str, match: str) -> None:
    with pytest.raises(InvalidMultiaddrError, match=match):
        Multiaddr(text)


@pytest.mark.parametrize(
    ("hex_bytes", "match"),
    [
        ("047f0000", "needs 4 bytes, only 3 remain"),
        ("047f000001060f", "/tcp value at byte 6 needs 2 bytes"),
        ("047f000001060fa100", "unknown protocol code 0 at byte 8"),  # trailing garbage
        ("047f000001060fa1ff", "truncated protocol code at 8"),
        ("ffffffffffffffffffff01", "longer than 9 bytes"),
        ("8400", "not minimally encoded"),  # 0x04 as a two-byte varint
        ("a503", "truncated /p2p length at byte 2"),
        ("a50305", "needs 5 bytes, only 0 remain"),
        ("a5030311aabb", "invalid /p2p value"),
        ("3500", "invalid /dns value"),
        ("35022f61", "invalid /dns value"),  # "/a"
        ("3502c328", "invalid /dns value"),  # bad UTF-8
        ("d2030112", "invalid /certhash value"),
        ("9903", "unknown protocol code 409 at byte 0"),
        ("890600000000000004", "/memory value at byte 2 needs 8 bytes, only 7 remain"),
        ("99", "truncated protocol code at 0"),
    ],
)
def test_binary_errors(hex_bytes: str, match: str) -> None:
    with pytest.raises(InvalidMultiaddrError, match=match):
        Multiaddr.from_bytes(bytes.fromhex(hex_bytes))


def test_binary_size_limit() -> None:
    with pytest.raises(InvalidMultiaddrError, match="longer than"):
        Multiaddr(b"\xdd\x03" * (MAX_MULTIADDR_BYTES // 2 + 1))


# -- one size limit for both forms (issue 8 item 6) --------------------------------------

WEBRTC_DIRECT = bytes.fromhex("9802")  # the valueless component with the longest name


@pytest.mark.parametrize(
    "text",
    [
        "/dns/" + "a" * (MAX_MULTIADDR_BYTES - 2),  # binary: 1 + 2 (length) + value
        "/memory/0" * (MAX_MULTIADDR_BYTES // 10 + 1),  # 9 chars, 10 bytes each
        "/ip4/1.2.3.4" + "/dns/" + "b" * 4000 + "/tcp/1" * 30,
        "/certhash/z" + "2" * 20_000,  # refused before its (quadratic) base58 decoding
        "/certhash/f" + "0" * (2 * MAX_MULTIADDR_BYTES + 1),
    ],
)
def test_text_whose_binary_form_is_too_long_is_rejected(text: str) -> None:
    with pytest.raises(InvalidMultiaddrError, match=f"longer than {MAX_MULTIADDR_BYTES} bytes"):
        Multiaddr(text)


def test_text_and_binary_limits_agree_at_the_boundary() -> None:
    at_limit = "/dns/" + "a" * (MAX_MULTIADDR_BYTES - 3)
    assert len(Multiaddr(at_limit).to_bytes()) == MAX_MULTIADDR_BYTES
    assert Multiaddr(Multiaddr(at_limit).to_bytes()) == Multiaddr(at_limit)
    with pytest.raises(InvalidMultiaddrError):
        Multiaddr(at_limit + "a")
    with pytest.raises(InvalidMultiaddrError):
        Multiaddr(Multiaddr(at_limit).to_bytes() + b"\x06\x00\x01")


@pytest.mark.parametrize(
    "raw",
    [
        WEBRTC_DIRECT * (MAX_MULTIADDR_BYTES // 2),  # 14 text characters per 2 bytes
        Multiaddr("/ip4/255.255.255.255").to_bytes() * (MAX_MULTIADDR_BYTES // 5),
        Multiaddr("/ipcidr/255").to_bytes() * (MAX_MULTIADDR_BYTES // 2),
    ],
)
def test_every_binary_address_within_the_limit_has_text_that_parses(raw: bytes) -> None:
    assert len(raw) <= MAX_MULTIADDR_BYTES
    m = Multiaddr(raw)
    assert Multiaddr(str(m)) == m
    assert Multiaddr(str(m) + "/") == m


def test_text_limit_covers_the_widest_text_per_byte() -> None:
    # Text longer than MAX_MULTIADDR_TEXT_CHARS is refused unparsed: that must never refuse
    # an address whose binary form fits, so the bound holds the widest text per byte.
    widest_components = [
        "/webrtc-direct", "/p2p-circuit", "/ip4/255.255.255.255", "/ipcidr/255",
        "/tcp/65535", "/ip6/" + "ffff:" * 7 + "ffff", "/memory/18446744073709551615",
        "/ip6zone/x", f"/ipfs/{QM_ID}", "/certhash/f0000", "/sni/x",
    ]  # fmt: skip
    widest = max(len(t) / len(Multiaddr(t).to_bytes()) for t in widest_components)
    assert widest == 7  # /webrtc-direct
    assert widest * MAX_MULTIADDR_BYTES + 1 <= MAX_MULTIADDR_TEXT_CHARS  # + a trailing '/'


def test_encapsulating_beyond_the_limit_is_refused() -> None:
    half = Multiaddr("/dns/" + "a" * (MAX_MULTIADDR_BYTES // 2))
    with pytest.raises(InvalidMultiaddrError, match=f"longer than {MAX_MULTIADDR_BYTES} bytes"):
        half.encapsulate(half)
    with pytest.raises(InvalidMultiaddrError, match="longer than"):
        _ = half / str(half)
    near = Multiaddr("/dns/" + "a" * (MAX_MULTIADDR_BYTES - 20))
    with pytest.raises(InvalidMultiaddrError, match="longer than"):
        near.with_peer_id(ED_ID)


def test_long_value_uses_multibyte_length() -> None:
    name = "a" * 200
    m = Multiaddr(f"/dns/{name}")
    assert m.to_bytes()[:3] == bytes([0x35, 0xC8, 0x01])  # length 200 as a 2-byte varint
    assert Multiaddr(m.to_bytes()) == m


# --- property tests ------------------------------------------------------------------------------

_ports = st.integers(0, 65535).map(str)
_names = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="/"), min_size=1, max_size=40
)
_peer_ids = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda s: str(KeyPair.from_ed25519_seed(s).peer_id)),
    st.binary(min_size=32, max_size=32).map(lambda d: str(PeerId.from_bytes(b"\x12\x20" + d))),
)
_certhashes = st.binary(min_size=32, max_size=32).map(
    lambda d: Multiaddr.from_bytes(b"\xd2\x03\x22\x12\x20" + d).value_for("certhash") or ""
)
_component = st.one_of(
    st.ip_addresses(v=4).map(lambda a: ("ip4", str(a))),
    st.ip_addresses(v=6).map(lambda a: ("ip6", str(a))),
    st.tuples(st.sampled_from(["tcp", "udp", "dccp", "sctp"]), _ports),
    st.tuples(st.sampled_from(["dns", "dns4", "dns6", "dnsaddr", "sni", "ip6zone"]), _names),
    st.tuples(st.just("ipcidr"), st.integers(0, 255).map(str)),
    st.tuples(st.just("memory"), st.integers(0, (1 << 64) - 1).map(str)),
    st.tuples(st.just("p2p"), _peer_ids),
    st.tuples(st.just("certhash"), _certhashes),
    st.sampled_from(
        ["tls", "noise", "quic", "quic-v1", "webtransport", "http", "https", "ws", "wss",
         "webrtc", "webrtc-direct", "p2p-circuit"]
    ).map(lambda n: (n, None)),
)  # fmt: skip


def _text(components: list[tuple[str, str | None]]) -> str:
    return "".join(f"/{n}" if v is None else f"/{n}/{v}" for n, v in components) or "/"


@given(st.lists(_component, max_size=8))
def test_text_binary_round_trip(components: list[tuple[str, str | None]]) -> None:
    text = _text(components)
    m = Multiaddr(text)
    assert str(m) == text
    assert m.components() == tuple(components)
    again = Multiaddr.from_bytes(m.to_bytes())
    assert again == m
    assert str(again) == text
    assert again.components() == m.components()


@given(st.lists(_component, max_size=5), st.lists(_component, max_size=5))
def test_encapsulate_then_decapsulate(
    a: list[tuple[str, str | None]], b: list[tuple[str, str | None]]
) -> None:
    ma, mb = Multiaddr(_text(a)), Multiaddr(_text(b))
    joined = ma.encapsulate(mb)
    assert joined.to_bytes() == ma.to_bytes() + mb.to_bytes()
    assert str(joined) == (str(ma) if not b else str(mb) if not a else str(ma) + str(mb))
    if b:
        assert joined.decapsulate(mb) == ma  # mb's last occurrence is the suffix itself


@given(st.binary(max_size=64))
def test_random_bytes_parse_or_raise(data: bytes) -> None:
    try:
        m = Multiaddr.from_bytes(data)
    except InvalidMultiaddrError:
        return
    assert m.to_bytes() == data
    assert Multiaddr(str(m)) == m


@given(st.text(max_size=64))
def test_random_text_parse_or_raise(text: str) -> None:
    try:
        m = Multiaddr(text)
    except InvalidMultiaddrError:
        return
    assert Multiaddr(m.to_bytes()) == m


@given(st.lists(st.sampled_from(["/ip4/1.2.3.4", "/tcp/1", "/ws", "/dns/x", "/udp/2"]), max_size=6))
def test_random_text_fragments(parts: list[str]) -> None:
    text = "".join(parts) or "/"
    assert str(Multiaddr(text)) == text


def test_ip_address_reads_a_leading_ip4_or_ip6_only() -> None:
    assert Multiaddr("/ip4/10.0.0.1/tcp/1").ip_address == ipaddress.IPv4Address("10.0.0.1")
    assert Multiaddr("/ip6/::1/udp/1").ip_address == ipaddress.IPv6Address("::1")
    for text in ("/dns4/example.org/tcp/1", "/ip6zone/x/ip6/fe80::1", "/memory/1", "/"):
        assert Multiaddr(text).ip_address is None


def test_tcp_head_splits_host_port_and_the_rest() -> None:
    head = Multiaddr("/dns4/example.org/tcp/443/tls/sni/example.org/ws").tcp_head()
    assert head == TcpHead(
        "dns4", "example.org", 443, (("tls", None), ("sni", "example.org"), ("ws", None))
    )
    assert head is not None and head.rest_names == ("tls", "sni", "ws")
    assert Multiaddr("/ip6/::1/tcp/1").tcp_head() == TcpHead("ip6", "::1", 1, ())
    for text in ("/ip4/1.2.3.4/udp/1", "/memory/1/tcp/2", "/ip4/1.2.3.4", "/"):
        assert Multiaddr(text).tcp_head() is None


def test_circuit_and_trailing_peer_id() -> None:
    relay, target = KeyPair.generate().peer_id, KeyPair.generate().peer_id
    circuit = Multiaddr(f"/ip4/1.2.3.4/tcp/1/p2p/{relay}/p2p-circuit")
    assert circuit.is_circuit and not circuit.ends_with_peer_id
    assert circuit.with_peer_id(target).ends_with_peer_id
    plain = Multiaddr("/ip4/1.2.3.4/tcp/1")
    assert not plain.is_circuit and not plain.ends_with_peer_id
    assert plain.with_peer_id(relay).ends_with_peer_id
