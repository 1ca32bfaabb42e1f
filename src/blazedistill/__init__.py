"""blazedistill: MediaPipe BlazeFace teachers in PyTorch and distillation into hardware-friendly students."""

__version__ = "0.1.0"

_LAZY = {
    "Detector": "blazedistill.detector",
    "Detection": "blazedistill.detector",
    "load_model": "blazedistill.models.loading",
}


def __getattr__(name: str):
    """Lazy public API, so `import blazedistill` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'blazedistill' has no attribute {name!r}")
