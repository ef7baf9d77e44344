"""The deploy's name: a hash of the client and the handler names (``data-deploy``).

A page carries the name of the deploy that rendered it; an event of a page of an older
deploy that names a handler no longer registered is answered ``expired`` (the page
reloads) rather than ``unknown_handler``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import hashlib
import typing as t

if t.TYPE_CHECKING:
    from .registry import Registry


class DeployName:
    """Gives this deploy's name, computed again when a handler was registered since.

    :param script_version: the client's version (:class:`~piggyback.client_script.ClientScript`).
    :param registry: the handlers.
    """

    def __init__(self, script_version: str, registry: Registry) -> None:
        self.script_version = script_version
        self.registry = registry
        self._named = (-1, "")  # (handlers counted, name)

    def __call__(self) -> str:
        handlers = len(self.registry)
        if self._named[0] != handlers:  # registered after the last look
            text = f"{self.script_version} {self.registry.fingerprint()}"
            self._named = (handlers, hashlib.sha256(text.encode()).hexdigest()[:10])
        return self._named[1]
