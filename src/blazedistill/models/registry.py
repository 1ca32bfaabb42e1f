"""Student registry (timm-style): ``register_student``, ``create_student``, ``list_students``.

A builder is ``fn(spec: ModelSpec, **kwargs) -> nn.Module`` returning a BlazeFace-contract model for
``spec`` (same input size and anchor layout as the teacher the spec comes from); see
``blazedistill.models.ssd`` for writing one around a new backbone. Builders raise ``ValueError`` for
layouts they do not support.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from blazedistill.specs import ModelSpec, teacher_spec

StudentBuilder = Callable[..., nn.Module]

_STUDENTS: dict[str, StudentBuilder] = {}

#: the student used when none is named: fastest on CPU at both batch 1 and batch 32 (docs/benchmarks.md)
DEFAULT_STUDENT = "resnet10"


def register_student(name: str) -> Callable[[StudentBuilder], StudentBuilder]:
    """Decorator registering ``fn(spec, **kwargs) -> nn.Module`` under ``name``."""

    def decorator(fn: StudentBuilder) -> StudentBuilder:
        if name in _STUDENTS:
            raise ValueError(f"student {name!r} is already registered")
        _STUDENTS[name] = fn
        return fn

    return decorator


def list_students() -> list[str]:
    """Names of all registered students, sorted."""
    _import_builtin_students()
    return sorted(_STUDENTS)


def create_student(name: str, spec_or_teacher_name: ModelSpec | str, **kwargs) -> nn.Module:
    """Build student ``name`` for a spec (or a teacher's name), in train mode, with ``.spec`` set.

    The model also gets ``student_config = {"name": name, "kwargs": kwargs}`` so checkpoints can
    rebuild it.
    """
    _import_builtin_students()
    if name not in _STUDENTS:
        raise ValueError(f"unknown student {name!r}; known: {', '.join(sorted(_STUDENTS))}")
    spec = spec_or_teacher_name if isinstance(spec_or_teacher_name, ModelSpec) else teacher_spec(spec_or_teacher_name)
    model = _STUDENTS[name](spec, **kwargs)
    model.spec = spec
    model.student_config = {"name": name, "kwargs": dict(kwargs)}
    return model


def _import_builtin_students() -> None:
    """Import the modules whose decorators register the built-in students."""
    from blazedistill.models import blazeface, resnet  # noqa: F401
