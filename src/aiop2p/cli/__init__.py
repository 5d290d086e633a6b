"""The ``aiop2p`` command."""

from .main import main

__all__ = ["main"]
