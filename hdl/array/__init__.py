"""The accelerator core: the output-stationary PE array, its edge logic, buffers and controller."""

from .array import SystolicArray
from .core import AcceleratorCore

__all__ = ["AcceleratorCore", "SystolicArray"]
