"""libp2p WebTransport, sans-IO: addresses, certificates and rotation with injected times."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aiop2p._wire import multibase
from aiop2p.errors import (
    CerthashMismatchError,
    InvalidArgumentError,
    InvalidMultiaddrError,
    P2PError,
)
from aiop2p.identity import KeyPair
from aiop2p.multiaddr import Multiaddr
from aiop2p.protocols.webtransport import (
    CERT_MARGIN_SECONDS,
    CERT_PERIOD_SECONDS,
    MAX_CERTHASHES,
    PATH,
    CertificateRotation,
    certhash,
    check_certhashes,
    make_webtransport_certificate,
    parse_webtransport_addr,
    session_path_ok,
    webtransport_addr,
)

T0 = 1_800_000_000.0
DAY = 24 * 3600.0
H1 = b"\x12\x20" + bytes(32)
H2 = b"\x12\x20" + bytes(range(32))


def _cert(not_before: float = T0, not_after: float = T0 + DAY) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return make_webtransport_certificate(
        key, not_before=not_before, not_after=not_after, serial_number=7
    )


def test_address_round_trip_with_two_certhashes_and_a_peer_id() -> None:
    peer = KeyPair.generate().peer_id
    addr = webtransport_addr("127.0.0.1", 4433, [H1, H2]).with_peer_id(peer)
    assert str(addr).startswith("/ip4/127.0.0.1/udp/4433/quic-v1/webtransport/certhash/u")
    assert Multiaddr(addr.to_bytes()) == addr
    target = parse_webtransport_addr(addr)
    assert target is not None
    assert (target.ip, target.port, target.ip_version) == ("127.0.0.1", 4433, 4)
    assert target.certhashes == (H1, H2)
    assert target.peer == peer


def test_certhashes_in_any_multibase_parse_to_the_same_hash() -> None:
    for prefix in "zbfmu":
        addr = Multiaddr(
            f"/ip6/::1/udp/1/quic-v1/webtransport/certhash/{multibase.encode(prefix, H2)}"
        )
        target = parse_webtransport_addr(addr)
        assert target is not None and target.certhashes == (H2,) and target.ip_version == 6


def test_listen_form_without_certhash_and_other_addresses() -> None:
    target = parse_webtransport_addr(Multiaddr("/ip4/0.0.0.0/udp/0/quic-v1/webtransport"))
    assert target is not None and target.certhashes == ()
    for other in (
        "/ip4/1.2.3.4/udp/1/quic-v1",
        "/ip4/1.2.3.4/tcp/1/ws",
        "/ip4/1.2.3.4/udp/1/quic-v1/webtransport/ws",
        "/dns4/x/udp/1/quic-v1/webtransport",
    ):
        assert parse_webtransport_addr(Multiaddr(other)) is None


def test_certhashes_we_cannot_check_are_refused() -> None:
    identity = multibase.encode("u", b"\x00\x04abcd")  # identity multihash, not SHA-256
    with pytest.raises(InvalidMultiaddrError, match="not a SHA-256"):
        parse_webtransport_addr(
            Multiaddr(f"/ip4/1.2.3.4/udp/1/quic-v1/webtransport/certhash/{identity}")
        )
    many = webtransport_addr("1.2.3.4", 1, [H1] * (MAX_CERTHASHES + 1))
    with pytest.raises(InvalidMultiaddrError, match="more than"):
        parse_webtransport_addr(many)
    with pytest.raises(P2PError):  # malformed multibase: refused by the multiaddr parser
        Multiaddr("/ip4/1.2.3.4/udp/1/quic-v1/webtransport/certhash/u!!")


def test_certificate_is_what_browsers_accept() -> None:
    cert = _cert(T0, T0 + 14 * DAY)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["libp2p"]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=14)
    assert certhash(cert)[:2] == b"\x12\x20" and len(certhash(cert)) == 34
    assert certhash(cert) != certhash(_cert())


def test_certificate_refuses_long_validity_and_other_keys() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidArgumentError, match="14 days"):
        make_webtransport_certificate(
            key, not_before=T0, not_after=T0 + 14 * DAY + 1, serial_number=1
        )
    with pytest.raises(InvalidArgumentError, match="P-256"):
        make_webtransport_certificate(
            ec.generate_private_key(ec.SECP384R1()),
            not_before=T0,
            not_after=T0 + DAY,
            serial_number=1,
        )
    with pytest.raises(InvalidArgumentError, match="P-256"):
        make_webtransport_certificate(
            rsa.generate_private_key(65537, 2048),  # type: ignore[arg-type]
            not_before=T0,
            not_after=T0 + DAY,
            serial_number=1,
        )


def _fill(rotation: CertificateRotation, now: float) -> list[int]:
    made = rotation.missing(now)
    for index in made:
        begin, end = rotation.window(index)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = make_webtransport_certificate(
            key, not_before=begin, not_after=end, serial_number=index + 1
        )
        rotation.add(index, cert, key)
    return made


def test_rotation_serves_current_announces_current_and_next() -> None:
    rotation = CertificateRotation(start=T0)
    assert _fill(rotation, T0) == [0, 1]
    assert _fill(rotation, T0 + DAY) == []  # nothing to make within the period
    cert0, _ = rotation.serving(T0)
    announced = rotation.announced(T0)
    assert announced[0] == certhash(cert0)
    assert rotation.noise_certhashes(T0) == announced
    begin, end = rotation.window(0)
    assert cert0.not_valid_before_utc.timestamp() == begin == T0 - CERT_MARGIN_SECONDS
    assert end - begin == CERT_PERIOD_SECONDS + 2 * CERT_MARGIN_SECONDS <= 14 * DAY
    # The next certificate is valid before the current one ends (the hand-over).
    assert rotation.window(1)[0] < end


def test_rotation_at_the_end_of_a_period_uses_the_announced_next() -> None:
    rotation = CertificateRotation(start=T0)
    _fill(rotation, T0)
    first = rotation.announced(T0)
    later = T0 + CERT_PERIOD_SECONDS + 1
    assert _fill(rotation, later) == [2]
    cert, _ = rotation.serving(later)
    assert certhash(cert) == first[1]  # an address from the last period still connects
    assert rotation.announced(later)[0] == first[1]
    assert rotation.noise_certhashes(later) == (*rotation.announced(later), first[0])
    # Two periods on, the first certificate is gone entirely.
    much_later = T0 + 2 * CERT_PERIOD_SECONDS + 1
    _fill(rotation, much_later)
    assert first[0] not in rotation.noise_certhashes(much_later)
    assert first[1] in rotation.noise_certhashes(much_later)  # the previous one


def test_rotation_clamps_a_clock_that_goes_back_and_needs_filling() -> None:
    rotation = CertificateRotation(start=T0)
    with pytest.raises(InvalidArgumentError, match="missing"):
        rotation.serving(T0)
    _fill(rotation, T0)
    assert rotation.index_at(T0 - 10 * DAY) == 0
    assert rotation.serving(T0 - 10 * DAY) == rotation.serving(T0)
    with pytest.raises(InvalidArgumentError, match="14 days"):
        CertificateRotation(start=T0, period_seconds=14 * DAY)


def test_dialler_checks_served_hash_against_address_and_noise() -> None:
    check_certhashes(H1, [H2, H1], [H1])
    check_certhashes(H1, [H1])  # before Noise: the address only
    with pytest.raises(CerthashMismatchError, match="address"):
        check_certhashes(H1, [H2], [H1, H2])
    with pytest.raises(CerthashMismatchError, match="Noise"):
        check_certhashes(H1, [H1], [H2])


def test_session_request_must_be_the_libp2p_endpoint() -> None:
    good = [
        (b":method", b"CONNECT"),
        (b":protocol", b"webtransport"),
        (b":scheme", b"https"),
        (b":authority", b"127.0.0.1:1"),
        (b":path", PATH.encode()),
    ]
    assert session_path_ok(good) is None
    assert session_path_ok([*good[:4], (b":path", b"/.well-known/libp2p-webtransport")])
    assert session_path_ok([(b":method", b"GET"), *good[1:]]) == "not a WebTransport CONNECT"
    assert session_path_ok([*good, (b":path", b"/x")]) == "repeated :path"
