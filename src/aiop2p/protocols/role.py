"""``Role``: which side of an exchange this end plays.

INITIATOR is the multistream dialer, Noise initiator and Yamux client of a connection,
or the side that opened a stream; the machines derive what goes on the wire from it
(message order, stream id parity).  It is not the transport direction
(``_aio.connection.Direction``): after a hole punch's simultaneous open both sides
dialled, and the role is agreed instead.
"""

from __future__ import annotations

import enum

__all__ = ["Role"]


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"
