"""aiop2p: asyncio-native libp2p with end-to-end encrypted request-response and a firewall.

Re-exports only: ``__all__`` is the union of the ``__all__`` of the public modules,
:mod:`aiop2p.network` (typed request-response behind a firewall), :mod:`aiop2p.node`
(the libp2p host and the types of its signatures), :mod:`aiop2p.config`,
:mod:`aiop2p.events`, :mod:`aiop2p.identity`, :mod:`aiop2p.multiaddr` and
:mod:`aiop2p.errors` (every exception).  ``tests/test_exports.py`` keeps it so.
"""

from . import config as _config
from . import errors as _errors
from . import events as _events
from . import identity as _identity
from . import multiaddr as _multiaddr
from . import network as _network
from . import node as _node
from ._version import __version__
from .config import *  # noqa: F403
from .errors import *  # noqa: F403
from .events import *  # noqa: F403
from .identity import *  # noqa: F403
from .multiaddr import *  # noqa: F403
from .network import *  # noqa: F403
from .node import *  # noqa: F403

__all__ = ["__version__"]
__all__ += _config.__all__
__all__ += _errors.__all__
__all__ += _events.__all__
__all__ += _identity.__all__
__all__ += _multiaddr.__all__
__all__ += _network.__all__
__all__ += _node.__all__
