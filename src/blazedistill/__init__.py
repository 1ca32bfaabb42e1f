"""blazedistill: MediaPipe BlazeFace teachers in PyTorch and distillation into hardware-friendly students."""

__version__ = "0.1.0"
