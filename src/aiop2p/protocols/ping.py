"""Ping (``/ipfs/ping/1.0.0``): the dialer sends 32 random bytes, the listener echoes them."""

PING_PROTOCOL_ID = "/ipfs/ping/1.0.0"
PING_PAYLOAD_SIZE = 32

__all__ = ["PING_PAYLOAD_SIZE", "PING_PROTOCOL_ID"]
