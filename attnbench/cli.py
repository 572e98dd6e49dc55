"""What the thin CLIs in scripts/ share: settings parsing and one-line errors.

Bad input (a missing or unreadable path, invalid settings, a bad dataset row) ends in one
line ``error: ...`` on stderr and exit code 2 -- no traceback.  An interruption (SIGTERM,
SIGHUP, Ctrl-C) ends in one line too, with exit code 128 + the signal number, and writes no
result.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .data import DataError
from .interrupt import Interrupted
from .settings import ConfigError

USER_ERRORS = (DataError, ConfigError, FileNotFoundError, PermissionError, IsADirectoryError,
               NotADirectoryError, UnicodeDecodeError, ValueError)


def fail(message: str, code: int = 2):
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)  # one line
    raise SystemExit(code)


def main(fn):
    """Run ``fn()``; bad input ends in one line on stderr and exit code 2, not a traceback."""
    try:
        return fn()
    except Interrupted as err:
        fail(f"{err.message}; no result written", err.exit_code)
    except KeyboardInterrupt:
        fail("interrupted (SIGINT); no result written", 130)
    except USER_ERRORS as err:
        if isinstance(err, OSError) and err.filename:
            fail(f"{err.strerror}: {err.filename}")
        fail(str(err))


def existing_path(value: str) -> Path:
    """An input file or folder that exists and can be opened."""
    path = Path(value)
    if not path.exists():
        fail(f"input path does not exist: {value}")
    try:
        if path.is_file():
            with open(path, "rb"):
                pass
        elif path.is_dir():
            next(iter(path.iterdir()), None)
    except OSError as err:
        fail(f"cannot read input {value}: {err.strerror}")
    return path


def existing_file(value: str) -> Path:
    path = existing_path(value)
    if not path.is_file():
        fail(f"input is not a file: {value}")
    return path


def existing_dir(value: str) -> Path:
    path = existing_path(value)
    if not path.is_dir():
        fail(f"input is not a folder: {value}")
    return path


def positive_int(option: str):
    """An argparse ``type`` for ``option``: an integer of at least 1 (a count of threads, say)."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            fail(f"{option}={value!r}: allowed: an integer of at least 1")
        return n

    return parse


def json_arg(option: str):
    """An argparse ``type`` for ``option``: JSON text, or ``@file`` holding it; must be an object."""

    def parse(value: str) -> dict:
        if value.startswith("@"):
            path = existing_file(value[1:])
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                fail(f"cannot read {option} file {path}: {err}")
        else:
            text = value
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            fail(f"{option} is not valid JSON: {err}")
        if not isinstance(obj, dict):
            fail(f"{option} must be a JSON object")
        return obj

    return parse


def require_keys(option: str, obj: dict, keys) -> dict:
    missing = [k for k in keys if k not in obj]
    if missing:
        fail(f"{option} lacks key(s): {', '.join(missing)}")
    return obj


def settings_arg(stage: str):
    """--settings of a ``stage`` job (``attnbench.settings.stage_settings``): JSON text or @file."""
    from .settings import STAGE_KEYS

    def parse(value: str) -> dict:
        return require_keys("--settings", json_arg("--settings")(value), STAGE_KEYS[stage])

    return parse
