"""Post into the chat room from outside any request: ``python -m examples.chat_bot TEXT``.

It opens the same store as the web workers (the default SQLite file in the working
directory, or ``PIGGYBACK_STORE``), so run it from where gunicorn runs.
"""

from __future__ import annotations

import sys

from examples.chat import post


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m examples.chat_bot TEXT", file=sys.stderr)
        return 2
    post("bot", " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
