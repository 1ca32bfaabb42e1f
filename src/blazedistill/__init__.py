"""blazedistill: MediaPipe BlazeFace teachers in PyTorch and distillation into hardware-friendly students."""

__version__ = "0.1.0"

#: public name -> module defining it; imported lazily so `import blazedistill` stays cheap (no torch)
_LAZY = {
    "load_teacher": "blazedistill.models.teachers",
    "load_model": "blazedistill.models.loading",
    "Detector": "blazedistill.detector",
    "Detection": "blazedistill.detector",
    "create_student": "blazedistill.models.registry",
    "list_students": "blazedistill.models.registry",
    "register_student": "blazedistill.models.registry",
    "RunConfig": "blazedistill.distill.config",
    "load_config": "blazedistill.distill.config",
    "train": "blazedistill.distill.loop",
    "evaluate": "blazedistill.evaluation.evaluate",
    "benchmark": "blazedistill.bench",
    "export_model": "blazedistill.export",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'blazedistill' has no attribute {name!r}")
