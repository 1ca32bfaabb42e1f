"""Checks on the files a command will write, made before the work so that a bad path fails fast, and the
one-line message for a write that still fails afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def output_file_problem(target: str | os.PathLike | None, flag: str, inputs: Iterable[Path] = ()) -> str | None:
    """None when `target` (a file to write; '-' = stdout) looks writable, else one line saying why not.

    Creates the file's folder. Refuses a target that is one of `inputs` (resolved paths) or a folder.
    """
    if target is None or str(target) == "-":
        return None
    path = Path(target)
    if path.resolve() in set(inputs):
        return f"{flag} {target} would overwrite the input {path}"
    if path.is_dir():
        return f"{flag} {target} is a folder; give a file name"
    return output_dir_problem(path.parent, flag, shown=target)


def output_dir_problem(
    folder: str | os.PathLike | None, flag: str, shown: str | os.PathLike | None = None
) -> str | None:
    """None when `folder` exists or could be created (it is created) and is writable, else one line."""
    if folder is None:
        return None
    shown = folder if shown is None else shown
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"{flag} {shown}: cannot create {folder} ({exc.strerror or exc})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{flag} {shown}: {folder} is not writable"
    return None


def write_failure(flag: str, target: str | os.PathLike, exc: OSError) -> str:
    """One line for an output that could not be written after the work: '--json FILE: cannot write (reason)'."""
    return f"{flag} {target}: cannot write ({exc.strerror or exc})"
