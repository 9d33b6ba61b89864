"""Argument checks shared by the `anpr` sub-commands: each bad value fails at parse time
with one line naming it, before any model or database is loaded."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer (1 or more)")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a rate, a duration)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number above 0")
    return value


def out_path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written as an output file, or None. Checked before any work,
    so a typo in ``--out`` fails at once rather than after a long export."""
    if path.is_dir():
        return "is a directory (give a file name)"
    if path.exists():
        return None if os.access(path, os.W_OK) else "the file is not writable"
    return _creatable(path)


def out_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used (or created) as an output folder, or None."""
    if path.exists():
        if not path.is_dir():
            return "is a file, not a folder"
        return None if os.access(path, os.W_OK | os.X_OK) else "the folder is not writable"
    return _creatable(path)


def _creatable(path: Path) -> str | None:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the folders in between are created
    if not parent.is_dir():
        return f"{parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create files in {parent} (permission denied)"
    return None
