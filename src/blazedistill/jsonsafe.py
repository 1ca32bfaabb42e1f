"""Strict JSON for reports: NaN and infinities become null, numpy scalars plain Python numbers."""

from __future__ import annotations

import math

import numpy as np


def json_safe(value):
    """`value` with NaN/±inf -> None and numpy scalars -> Python numbers, recursively through dicts and lists."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
