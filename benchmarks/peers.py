"""The peers piggyback is measured against, fetched from their registries on first use.

- htmx from the npm registry (``npm install htmx.org``), for its ``htmx.min.js``.
- Flask-Sijax from PyPI, installed with ``pip --target`` beside the benchmarks, never
  into the environment (it and its 2015 dependencies stay out of everyone's way).

Both land in ``benchmarks/.deps/`` (git-ignored) and are reused by later runs. When a
registry or an import fails, the reason is returned and its rows are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEPS = Path(__file__).resolve().parent / ".deps"
HTMX_PACKAGE = "htmx.org"
SIJAX_PACKAGES = ["flask-sijax==0.4.1", "sijax==0.3.2"]


@dataclass
class Peer:
    name: str
    #: What the benchmark uses: htmx.min.js, or the directory to put on the path.
    path: Path | None = None
    version: str = ""
    #: Why the peer is missing, when it is.
    skipped: str = ""


def htmx() -> Peer:
    directory = DEPS / "npm"
    script = directory / "node_modules" / "htmx.org" / "dist" / "htmx.min.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            return Peer("htmx", skipped="npm is not installed (apt-get install npm)")
        directory.mkdir(parents=True, exist_ok=True)
        command = [npm, "install", "--no-audit", "--no-fund", "--no-save"]
        command += ["--prefix", str(directory), HTMX_PACKAGE]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not script.exists():
            return Peer(
                "htmx", skipped=f"npm install {HTMX_PACKAGE} failed: {done.stderr.strip()[-300:]}"
            )
    package = json.loads((script.parent.parent / "package.json").read_text())
    return Peer("htmx", path=script, version=package["version"])


def flask_sijax() -> Peer:
    directory = DEPS / "python"
    if not (directory / "flask_sijax.py").exists():
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
        command += ["--target", str(directory), *SIJAX_PACKAGES]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            return Peer(
                "Flask-Sijax",
                skipped=f"pip install flask-sijax failed: {done.stderr.strip()[-300:]}",
            )
    root = str(Path(__file__).resolve().parent.parent)
    check = subprocess.run(
        [sys.executable, "-c", "import benchmarks.sijax_app"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([root, str(directory)])},
    )  # fmt: skip
    if check.returncode != 0:
        return Peer(
            "Flask-Sijax", skipped=f"flask_sijax does not import: {check.stderr.strip()[-300:]}"
        )
    return Peer("Flask-Sijax", path=directory, version=SIJAX_PACKAGES[0].split("==")[1])
