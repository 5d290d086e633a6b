"""Sans-IO protocol machines: bytes in, events out, bytes to send.

Nothing here imports asyncio, socket, time or random: time and randomness are arguments.
"""
