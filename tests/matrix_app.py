"""The chat example, its store used while the app is imported, for the server matrix.

A server that imports the app once and then forks its workers (uWSGI by default,
``gunicorn --preload``) hands each worker a store whose connection was opened before
the fork. ``python -m tests.matrix_app PORT`` serves it with werkzeug's threaded
``run_simple``.
"""

from __future__ import annotations

import sys

from werkzeug.serving import run_simple

from examples.chat import app as app
from examples.chat import live

live.store.secret()

if __name__ == "__main__":
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=True)
