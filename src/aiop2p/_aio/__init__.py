"""asyncio drivers: they move bytes between sockets and the sans-IO machines, nothing more."""
