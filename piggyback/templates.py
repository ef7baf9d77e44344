"""Jinja templates, or one block of one, rendered as ``Markup`` for ``page.set_html``.

``set_html``, ``replace`` and ``append`` escape a ``str`` and insert a ``Markup``
as HTML. A template rendered with autoescaping is safe HTML, so these return
``Markup``; a template that is not autoescaped is refused rather than trusted.

.. code-block:: python

    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from piggyback.templates import render_block

    jinja = Environment(loader=FileSystemLoader("templates"), autoescape=select_autoescape())

    @live.handler
    def add(page, event):
        todo = save_todo(event.value)
        page.append("todos", render_block(jinja, "todo.html", "item", todo=todo))

(Flask apps use ``live.render_block(...)``, with the app's environment and context.)

.. versionadded:: 0.1
"""

from __future__ import annotations

import typing as t

from markupsafe import Markup

if t.TYPE_CHECKING:
    from jinja2 import Environment
    from jinja2 import Template


def render_template(environment: Environment, template: str, **context: t.Any) -> Markup:
    """Render the whole template as ``Markup``.

    :param environment: the Jinja environment that loads the template.
    :param template: the template's name.
    :raise ValueError: the environment does not autoescape the template.
    """
    return Markup(_autoescaped(environment, template).render(context))


def render_block(environment: Environment, template: str, block: str, **context: t.Any) -> Markup:
    """Render one ``{% block %}`` of a template as ``Markup``.

    The block sees ``context`` and the environment's globals, as it would in the whole
    template; it must be defined in that template (not only in one it extends).

    :param environment: the Jinja environment that loads the template.
    :param template: the template's name.
    :param block: the block's name.
    :raise ValueError: the template has no such block, or is not autoescaped.
    """
    loaded = _autoescaped(environment, template)
    render = loaded.blocks.get(block)
    if render is None:
        names = ", ".join(repr(name) for name in sorted(loaded.blocks)) or "none"
        raise ValueError(f"The template {template!r} has no block {block!r}; its blocks: {names}.")
    return Markup("".join(render(loaded.new_context(context))))


def _autoescaped(environment: Environment, name: str) -> Template:
    autoescape = environment.autoescape
    if not (autoescape(name) if callable(autoescape) else autoescape):
        raise ValueError(
            f"The template {name!r} is not autoescaped, so its HTML cannot be trusted as"
            " Markup: give the environment autoescape=True or select_autoescape() that"
            " covers this name (Flask autoescapes .html, .htm, .xml, .xhtml and .svg)."
        )
    return environment.get_template(name)
