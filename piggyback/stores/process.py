"""This process's id, kept up to date across ``fork`` without a system call per read.

Stores check it to tell their own connections, locks and lock files from those a
forked child inherited from its parent.
"""

from __future__ import annotations

import os

#: The id of the process running now (read it as ``process.pid``, never import it).
pid = os.getpid()


def _forked() -> None:
    global pid
    pid = os.getpid()


os.register_at_fork(after_in_child=_forked)
