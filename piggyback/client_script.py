"""The client, ``piggyback.js``: the file the middleware serves at ``<mount>/piggyback.js``.

Its URL carries a version (a hash of the file), so a versioned request may be cached for
good; every answer has an ``ETag``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import hashlib
import importlib.resources
import typing as t

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

_FOREVER = "public, max-age=31536000, immutable"


class ClientScript:
    """The client's script, read once from the package.

    :param mount: the path piggyback owns, e.g. ``"/_pb"``.
    """

    def __init__(self, mount: str) -> None:
        self.body = importlib.resources.files(__package__).joinpath("js/piggyback.js").read_bytes()
        #: A hash of the file: its URL's ``v``, its ETag, part of the deploy's name.
        self.version = hashlib.sha256(self.body).hexdigest()[:12]
        #: The script's path under the mount.
        self.path = f"{mount}/piggyback.js"

    def url(self, root: str) -> str:
        """The versioned URL of the script, for an app mounted at ``root``."""
        return f"{root}{self.path}?v={self.version}"

    def serve(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        """Answer a request for the script: the file, or 304 when the browser has it."""
        etag = f'"{self.version}"'
        versioned = environ.get("QUERY_STRING") == f"v={self.version}"
        cache = _FOREVER if versioned else "no-cache"
        headers = [("ETag", etag), ("Cache-Control", cache), ("X-Content-Type-Options", "nosniff")]
        if etag in environ.get("HTTP_IF_NONE_MATCH", ""):
            start_response("304 Not Modified", headers)
            return []
        headers += [
            ("Content-Type", "text/javascript; charset=utf-8"),
            ("Content-Length", str(len(self.body))),
        ]
        start_response("200 OK", headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [self.body]
