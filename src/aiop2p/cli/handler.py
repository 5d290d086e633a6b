"""``aiop2p serve --handler package.module:function``: the user's request handler, found
the way ``uvicorn module:app`` finds an application.

The current directory comes first on ``sys.path`` (a module next to the user is found
without installing it).  Everything that can go wrong while finding it — a malformed
spec, a module that fails to import, a missing attribute, something that is not an
``async def`` — is an :class:`InvalidArgumentError` with one line saying which, so the
command can stop with a usage error before it listens.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import InvalidArgumentError
from ..network import InboundRequest

__all__ = ["AsyncHandler", "load_handler"]

AsyncHandler = Callable[[InboundRequest[Any, Any]], Awaitable[Any]]
"""What ``--handler`` names: ``async def handler(request) -> response``."""


def load_handler(spec: str) -> AsyncHandler:
    """The async function ``spec`` (``module:attribute``, the attribute possibly dotted)
    names; see the module docstring for the errors."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise InvalidArgumentError(
            f"--handler {spec!r}: expected MODULE:FUNCTION, e.g. myapp.server:handle"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise InvalidArgumentError(
                f"--handler {spec!r}: no module named {exc.name!r} (from {cwd} and sys.path)"
            ) from None
        raise _import_failed(spec, module_name, exc) from None
    except Exception as exc:  # the module's own code failed: say what, not a traceback
        raise _import_failed(spec, module_name, exc) from None
    target: Any = module
    for name in attr_path.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise InvalidArgumentError(
                f"--handler {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(target):
        raise InvalidArgumentError(
            f"--handler {spec!r}: {type(target).__name__} is not callable; "
            "expected an async function handler(request) -> response"
        )
    if not (
        inspect.iscoroutinefunction(target)
        or inspect.iscoroutinefunction(getattr(target, "__call__", None))  # noqa: B004
    ):
        raise InvalidArgumentError(
            f"--handler {spec!r}: {attr_path} is not an async function; "
            "define it with 'async def handler(request)'"
        )
    handler: AsyncHandler = target
    return handler


def _import_failed(spec: str, module_name: str, exc: Exception) -> InvalidArgumentError:
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}, line {exc.lineno})"
    return InvalidArgumentError(
        f"--handler {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}{where}"
    )
