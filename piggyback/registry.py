"""The handler registry: the only names an event can invoke."""

from __future__ import annotations

import hashlib
import typing as t

from .event import HANDLER_NAME as HANDLER_NAME
from .exceptions import HandlerError
from .exceptions import UnknownHandler

if t.TYPE_CHECKING:
    from .event import Event
    from .page import Page

#: A handler: called with the page and the event.
Handler = t.Callable[["Page", "Event"], t.Any]
#: A ``before_event`` hook (:mod:`piggyback.hooks`): called like a handler, before it.
Hook = t.Callable[["Page", "Event"], t.Any]
F = t.TypeVar("F", bound=Handler)


class Registry:
    """Handlers by name, and the hooks that run before every one of them. Registering
    a name twice raises.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        #: The ``before_event`` hooks, in the order they run.
        self.hooks: list[Hook] = []
        #: ``@decorator`` and ``@decorator("name")``: what ``live.handler`` is.
        self.decorator = HandlerDecorator(self)

    def add_hook(self, hook: Hook) -> Hook:
        """Run ``hook`` before every handler; see :mod:`piggyback.hooks`.

        :raise TypeError: ``hook`` is not callable.
        """
        if not callable(hook):
            raise TypeError(
                f"A before_event hook is called as hook(page, event); {hook!r} is not callable."
            )
        self.hooks.append(hook)
        return hook

    def add(self, name: str, handler: Handler) -> None:
        """Register ``handler`` under ``name``.

        :raise HandlerError: the name is not valid, or taken.
        """
        if not isinstance(name, str) or not HANDLER_NAME.match(name):
            raise HandlerError(
                f"{name!r} is not a valid handler name: use up to 128 letters, digits"
                " and _ . : -, starting with a letter or _."
            )
        if name in self._handlers:
            raise HandlerError(
                f"Cannot register {_describe(handler)} as {name!r}: {name!r} is already"
                f" registered to {_describe(self._handlers[name])}; pick another name."
            )
        self._handlers[name] = handler

    def find(self, name: str) -> Handler:
        """The handler registered as ``name``.

        :raise UnknownHandler: no such handler. The reason does not list the registered
            names: the client is not told more than it sent.
        """
        handler = self._handlers.get(name)
        if handler is None:
            raise UnknownHandler(f"No handler is registered as {name!r}.")
        return handler

    def fingerprint(self) -> str:
        """A short digest of the registered names: it changes when a deploy renames one."""
        names = "\n".join(sorted(self._handlers)).encode()
        return hashlib.sha256(names).hexdigest()[:10]

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)


class HandlerDecorator:
    """Registers handlers in one registry, as a decorator: ``@handler`` registers a
    function under its name, ``@handler("name")`` under the name given. It is
    ``live.handler`` (:meth:`piggyback.Piggyback.handler`), and the Flask extension's.

    .. code-block:: python

        @live.handler
        def increment(page, event): ...

        @live.handler("rename")
        def rename_item(page, event): ...

    :param registry: where the handlers go.

    .. versionadded:: 0.1
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    @t.overload
    def __call__(self, name: F) -> F: ...
    @t.overload
    def __call__(self, name: str | None = None) -> t.Callable[[F], F]: ...
    def __call__(self, name: str | F | None = None) -> F | t.Callable[[F], F]:
        if callable(name):
            self._registry.add(name.__name__, name)
            return name

        def register(function: F) -> F:
            self._registry.add(function.__name__ if name is None else name, function)
            return function

        return register


def _describe(handler: Handler) -> str:
    module = getattr(handler, "__module__", "?")
    return f"{module}.{getattr(handler, '__qualname__', handler)!s}"
