"""Byte pipes: each transport dials and listens on the multiaddrs it understands."""
