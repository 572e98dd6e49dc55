"""What the thin CLIs in scripts/ share: settings parsing and one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .data import DataError
from .settings import ConfigError

USER_ERRORS = (DataError, ConfigError, FileNotFoundError, PermissionError, IsADirectoryError, ValueError)


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(fn):
    """Run ``fn()``; bad input ends in one line on stderr and exit code 2, not a traceback."""
    try:
        return fn()
    except USER_ERRORS as err:
        if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)) and err.filename:
            fail(f"{err.strerror}: {err.filename}")
        fail(str(err))


def existing_path(value: str) -> Path:
    path = Path(value)
    if not path.exists():
        fail(f"input path does not exist: {value}")
    try:
        if path.is_file():
            with open(path, "rb"):
                pass
    except OSError as err:
        fail(f"cannot read input {value}: {err.strerror}")
    return path


def settings_arg(value: str) -> dict:
    """--settings takes JSON text or @file."""
    try:
        text = Path(value[1:]).read_text() if value.startswith("@") else value
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as err:
        fail(f"--settings is not valid JSON: {err}")
