"""blazedistill: MediaPipe BlazeFace teachers in PyTorch and distillation into hardware-friendly students."""

__version__ = "0.1.0"

__all__ = ["load_teacher"]


def __getattr__(name: str):
    # lazy: `import blazedistill` stays cheap (no torch) until the API is used
    if name == "load_teacher":
        from .models.teachers import load_teacher

        return load_teacher
    raise AttributeError(f"module 'blazedistill' has no attribute {name!r}")
