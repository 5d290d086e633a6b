"""aiop2p: asyncio-native libp2p with end-to-end encrypted request-response."""

from ._version import __version__

__all__ = ["__version__"]
