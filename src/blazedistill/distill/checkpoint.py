"""Checkpoints as plain dicts: atomic save, weights_only load, RNG state capture, student rebuild."""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from blazedistill.messages import first_line
from blazedistill.specs import ModelSpec

FORMAT = "blazedistill-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or not a blazedistill checkpoint."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write `state` with torch.save through a temp file in the same folder and os.replace (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a blazedistill checkpoint with weights_only=True; CheckpointError names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, LookupError) as exc:
        # LookupError: the weights-only unpickler's KeyError/IndexError on arbitrary bytes (e.g. a text file)
        reason = "unexpected pickle data" if isinstance(exc, LookupError) else first_line(exc)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        tag = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a blazedistill checkpoint (format {tag!r}, expected {FORMAT!r})")
    return state


def inference_weights(state: dict) -> dict:
    """The weights to run: the EMA weights when the run kept an EMA, else the trained weights."""
    return state.get("ema") or state["model"]


def load_student(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the student saved in a checkpoint: an eval-mode module with `.spec`, holding its inference weights."""
    from blazedistill.models.registry import create_student

    state = load_checkpoint(path, map_location)
    try:
        spec = ModelSpec.from_dict(state["spec"])
        model = create_student(state["student"], spec, **state.get("student_kwargs", {}))
        model.load_state_dict(inference_weights(state))
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        reason = first_line(exc)
        raise CheckpointError(f"{path}: cannot rebuild student {state.get('student')!r} ({reason[:300]})") from None
    model.spec = spec
    return model.eval()


def rng_state() -> dict:
    """Every RNG the run draws from (Python, NumPy, torch CPU and CUDA), as tensors and plain types."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state captured."""
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def describe(state: dict[str, Any]) -> str:
    """One line about a checkpoint (for logs)."""
    return (
        f"{state['student']} distilled from {state['teacher']}, epoch {state.get('epoch')}, "
        f"step {state.get('step')}, best {state.get('best_metric')}"
    )
