"""Circuit relay v2 on a :class:`~aiop2p.services.host.Host`: the client and the (opt-in) server.

- :mod:`.addrs`: circuit addresses (``<relay-addr>/p2p/<relay>/p2p-circuit[/p2p/<target>]``).
- :mod:`.exchange`: one hop or stop message exchange over a stream.
- :mod:`.client`: :class:`~.client.RelayClient`, reservations and their refresh, relayed
  listening and dialling.
- :mod:`.transport`: :class:`~.transport.RelayTransport` (circuit addresses for the node's
  dialer and listeners) and the relayed :class:`~aiop2p._aio.connection.Connection`
  carried over one stream of the relay connection.
- :mod:`.server`: :class:`~.server.RelayServer`, answering hop RESERVE and CONNECT.
- :mod:`.splice`: the two spliced streams of one circuit on the server.

A relayed connection is an ordinary ``Connection`` upgraded with Noise and Yamux end to
end over one stream of the relay connection, so the relay only ever sees ciphertext.
"""
