"""The accelerator core: the output-stationary PE array and its edge logic."""

from .array import SystolicArray

__all__ = ["SystolicArray"]
