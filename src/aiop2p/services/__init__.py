"""Features on top of connections: identify, ping, perf, the peer store."""
