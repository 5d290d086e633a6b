"""``python -m aiop2p``: the ``aiop2p`` command."""

from .cli import main

raise SystemExit(main())
