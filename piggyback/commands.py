"""Commands: what a handler queues for the browser, built safely from data.

Helpers travel as data for a fixed client-side action (``["text", id, value]``), so no
value can become script or markup by accident; only :meth:`Commands.send_js` carries
code. :class:`Commands` is shared by :class:`~piggyback.page.Page` and the out-of-band
handles of :class:`~piggyback.Piggyback`.
"""

from __future__ import annotations

import re
import typing as t

from markupsafe import escape

from .script import literal

Command = list[t.Any]


def checked_commands(value: t.Any) -> list[Command] | None:
    """``value`` if it is a list of commands (lists), else ``None``: damaged."""
    if not isinstance(value, list) or not all(isinstance(c, list) for c in value):
        return None
    return value


_ATTRIBUTE_NAME = re.compile(r"[A-Za-z_:][-A-Za-z0-9_:.]*\Z")
_FUNCTION_PATH = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*\Z", re.ASCII)
_URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "poster", "data"}
# An SVG <animate> can set an href from these: each ;-separated value is a URL.
_ANIMATION_ATTRIBUTES = {"to", "from", "by", "values"}
_URL_SCHEMES = ("http", "https", "mailto", "tel")
# A redirect leaves the page: the client follows only these.
_PAGE_SCHEMES = ("http", "https")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# Browsers drop tabs and newlines anywhere in a URL ("java\tscript:" is "javascript:")
# and control characters and spaces around it.
_URL_IGNORED = re.compile(r"[\t\n\r]")
_URL_TRIMMED = "".join(map(chr, range(0x21)))


class Commands:
    """The command helpers; subclasses decide where a command goes (:meth:`_queue`)."""

    def _queue(self, command: Command) -> None:
        raise NotImplementedError

    def send_js(self, code: str) -> None:
        """Queue raw JavaScript, run in the page's global scope. The code is trusted:
        build it from data with :func:`piggyback.literal`.
        """
        if not isinstance(code, str):
            raise TypeError(f"send_js() takes JavaScript source as str, not {code!r}.")
        self._queue(["js", code])

    def set_text(self, id: str, value: t.Any) -> None:
        """Set the element's text; ``value`` is shown as text, never parsed as HTML."""
        self._queue(["text", _id(id), "" if value is None else str(value)])

    def set_html(self, id: str, html: t.Any) -> None:
        """Set the element's content: a ``str`` is escaped, a ``Markup`` is inserted."""
        self._queue(["html", _id(id), _html(html)])

    def replace(self, id: str, html: t.Any) -> None:
        """Replace the whole element with ``html`` (escaped unless ``Markup``)."""
        self._queue(["replace", _id(id), _html(html)])

    def morph(self, id: str, html: t.Any) -> None:
        """Replace the whole element with ``html`` (escaped unless ``Markup``) by morphing
        the live DOM into it: the focused element, what the user typed, the caret, scroll
        positions and elements matched by id survive.

        .. versionadded:: 0.1
        """
        self._queue(["morph", _id(id), _html(html)])

    def append(self, id: str, html: t.Any) -> None:
        """Add ``html`` (escaped unless ``Markup``) at the end of the element."""
        self._queue(["append", _id(id), _html(html)])

    def remove(self, id: str) -> None:
        """Remove the element."""
        self._queue(["remove", _id(id)])

    def set_attr(self, id: str, name: str, value: t.Any) -> None:
        """Set an attribute; ``None`` removes it.

        Event-handler attributes (``on*``) and ``srcdoc`` are refused, and URL attributes
        only take http(s), mailto, tel or relative URLs, so data never becomes script.
        """
        name = _attribute_name(name)
        if value is not None:
            value = str(value)
            if name.lower() in _URL_ATTRIBUTES:
                _check_url(value)
            elif name.lower() in _ANIMATION_ATTRIBUTES:
                for item in value.split(";"):
                    _check_url(item)
        self._queue(["attr", _id(id), name, value])

    def add_class(self, id: str, name: str) -> None:
        """Add a class to the element."""
        self._queue(["addClass", _id(id), _class_name(name)])

    def remove_class(self, id: str, name: str) -> None:
        """Remove a class from the element."""
        self._queue(["removeClass", _id(id), _class_name(name)])

    def set_value(self, id: str, value: t.Any) -> None:
        """Set a form control's value."""
        self._queue(["value", _id(id), "" if value is None else str(value)])

    def focus(self, id: str) -> None:
        """Move the keyboard focus to the element."""
        self._queue(["focus", _id(id)])

    def call(self, function: str, *args: t.Any) -> None:
        """Call a global function by its dotted path, e.g. ``call("chart.update", 3)``.

        The arguments travel as JSON data, never as code.
        """
        if not isinstance(function, str) or not _FUNCTION_PATH.match(function):
            raise ValueError(
                f"call() takes a dotted path of JavaScript names like 'app.refresh',"
                f" not {function!r}."
            )
        literal(args)  # raises TypeError here, where the bad value comes from
        self._queue(["call", function, list(args)])

    def push_url(self, url: str) -> None:
        """Show ``url``, a URL of this site, in the address bar as a new history entry.

        Back and forward send a ``popstate`` event to the handler named by
        ``data-pb-popstate`` on ``<body>``, with the URL in ``event.value``.

        .. versionadded:: 0.1
        """
        self._queue(["pushUrl", _same_site_url(url, "push_url")])

    def replace_url(self, url: str) -> None:
        """Show ``url``, a URL of this site, in the address bar in place of the current one.

        .. versionadded:: 0.1
        """
        self._queue(["replaceUrl", _same_site_url(url, "replace_url")])

    def redirect(self, url: str, *, external: bool = False) -> None:
        """Send the browser to ``url``, a URL of this site (``/path``, ``page?x=1``).

        A URL that could leave the site (``https://…``, ``//host``, ``/\\host``) is
        refused unless ``external=True``, which allows http and https URLs anywhere.
        """
        self._queue(redirect_command(url, external=external))


def redirect_command(url: str, *, external: bool = False) -> Command:
    """The command :meth:`Commands.redirect` queues, for ``url``, checked the same way
    (:class:`~piggyback.EventRedirected` carries one too)."""
    url = str(url)
    _check_url(url, _PAGE_SCHEMES)
    if not external and not _is_same_origin(url):
        raise ValueError(
            f"redirect() refuses {url!r}: it may leave the site. Use a path such as"
            " '/next', or pass external=True to go to another site."
        )
    return ["redirect", url]


def _same_site_url(url: t.Any, method: str) -> str:
    if not isinstance(url, str):
        raise TypeError(f"{method}() takes a URL as str, not {url!r}.")
    if not _is_same_origin(url):
        raise ValueError(
            f"{method}() takes a URL of this site, such as '/items?page=2', not {url!r}:"
            " a scheme or a leading '//' could leave it."
        )
    return url


def _html(value: t.Any) -> str:
    return "" if value is None else str(escape(value))


def _id(id: t.Any) -> str:
    if not isinstance(id, str) or not id:
        raise TypeError(f"An element id must be a non-empty str, not {id!r}.")
    return id


def _class_name(name: t.Any) -> str:
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"A class name must be one non-empty word, not {name!r}.")
    return name


def _attribute_name(name: t.Any) -> str:
    if not isinstance(name, str) or not _ATTRIBUTE_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid attribute name.")
    lowered = name.lower()
    if lowered.startswith("on") or lowered == "srcdoc":
        raise ValueError(
            f"set_attr() refuses {name!r}: it would run its value as code. Use"
            " send_js() for code, or a data-pb-* attribute for events."
        )
    # The name keeps its case: setAttribute lowercases it on HTML elements itself, and
    # on SVG elements the case matters ("viewBox").
    return name


def _is_same_origin(url: str) -> bool:
    """Whether a browser resolves ``url`` against the page's own origin: no scheme, no
    authority. Browsers drop tabs and newlines, trim control characters, and read a
    backslash as a slash, so ``/\\host`` and ``\\\\host`` are ``//host``."""
    cleaned = _URL_IGNORED.sub("", url).strip(_URL_TRIMMED).replace("\\", "/")
    return not _SCHEME.match(cleaned) and not cleaned.startswith("//")


def _check_url(url: str, schemes: tuple[str, ...] = _URL_SCHEMES) -> str:
    scheme = _SCHEME.match(_URL_IGNORED.sub("", url).lstrip(_URL_TRIMMED))
    if scheme and scheme.group(1).lower() not in schemes:
        raise ValueError(
            f"Refusing the URL {url!r}: only {', '.join(schemes)} and relative URLs are allowed."
        )
    return url
