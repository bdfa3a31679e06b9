#!/usr/bin/env python3
"""Set-up plus the README's commands, with nothing but python3 (no make, venv or env vars).

    python3 run.py reproduce [ARGS]   # the headline: python experiments/hard_ash.py ARGS
    python3 run.py test [ARGS]        # the tests: python -m pytest -n 2 -q ARGS
    python3 run.py lint               # ruff check . and ruff format --check . (CI)

The first call creates ``.venv/`` in the checkout and installs jaxcl with its test extras
into it (a few minutes); later calls reuse it and re-install when pyproject.toml changes
(its hash is stamped in ``.venv/``). The command then replaces this process, so Ctrl-C and
SIGTERM reach the experiment itself (it stops cleanly after saving). Standard library only:
``make`` is missing from minimal Debian images and from Windows, python3 is all we assume.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / "jaxcl-install.sha256"
COMMANDS = {
    "reproduce": [["experiments/hard_ash.py"]],
    "test": [["-m", "pytest", "-n", "2", "-q"]],
    "lint": [["-m", "ruff", "check", "."], ["-m", "ruff", "format", "--check", "."]],
}


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def create_environment() -> None:
    """A fresh ``.venv`` with a current pip (an older python3's bundled pip may predate jax's
    wheels)."""
    print(f"run.py: creating the project environment {VENV}", flush=True)
    upgrade_pip = [str(venv_python()), "-m", "pip", "install", "--quiet", "--upgrade", "pip"]
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        subprocess.run(upgrade_pip, cwd=ROOT, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        shutil.rmtree(VENV, ignore_errors=True)  # half an environment would be reused
        sys.exit(
            f"run.py: could not create {VENV} ({err}); on Debian/Ubuntu this needs the "
            f"python3-venv package; run the same command to retry"
        )


def ensure_environment() -> Path:
    """The project environment's python, (re)installed unless pyproject.toml is unchanged."""
    python = venv_python()
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return python
    if not python.exists():
        create_environment()
    print("run.py: installing jaxcl and its dependencies (first time: a few minutes)", flush=True)
    install = [str(python), "-m", "pip", "install", "--quiet", "-e", ".[test]"]
    if subprocess.run(install, cwd=ROOT).returncode:
        sys.exit("run.py: the installation failed (see above); run the same command to retry")
    STAMP.write_text(wanted + "\n")
    return python


def main(argv: list) -> None:
    # Any python3 may run this file; pip's own refusal of an old one is less clear.
    if sys.version_info < (3, 10):  # noqa: UP036
        sys.exit(f"run.py: jaxcl needs Python >= 3.10, got {sys.version.split()[0]}")
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    python = str(ensure_environment())
    os.chdir(ROOT)
    *before, last = COMMANDS[argv[0]]
    for args in before:
        if subprocess.run([python, *args]).returncode:
            sys.exit(1)
    command = [python, *last, *argv[1:]]
    if os.name == "nt":  # no exec on Windows
        sys.exit(subprocess.run(command).returncode)
    os.execv(python, command)


if __name__ == "__main__":
    main(sys.argv[1:])
