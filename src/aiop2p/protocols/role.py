"""``Role``: which side of an exchange this end plays.

One spelling for what the machines used to call ``initiator``, ``is_client``,
``is_initiator`` and ``outbound``: the multistream dialer, Noise initiator and Yamux
client of a connection, or the opener of a stream.  It says nothing on the wire (Yamux
stream ids and Noise messages follow from it as before).  It is not the transport
direction (``_aio.connection.Direction``): after a hole punch's simultaneous open both
sides dialled, and the role is agreed instead.
"""

from __future__ import annotations

import enum

__all__ = ["Role"]


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"
