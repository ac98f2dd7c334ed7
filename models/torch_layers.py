"""PyTorch layer conversion: quantize an ``nn.Linear`` and run it with golden dequantized weights.

Named ``torch_layers`` rather than ``torch`` so that ``golden.torch`` can never be confused with
(or, when ``golden/`` is on ``sys.path``, shadow) the ``torch`` package.

:class:`QuantLinear` is the *accuracy* model of a quantized layer: its forward is
``F.linear(x, W_deq, bias)`` with ``W_deq = QuantizedTensor.dequantize()`` rounded once to
float32 (exact for FP16-scaled low-bit codes: a level has at most 5 significant bits and an
FP16 scale 11; INT8-scaled and wide formats can round in the last float32 bit).
Bit-exact hardware arithmetic (activation alignment, accumulator widths) is modelled
elsewhere in golden/; this layer answers "what does the quantized weight do to the output".
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from bitmod.golden.quantize import QuantizedTensor, quantize

__all__ = ["QuantLinear", "quantize_linear"]


def quantize_linear(layer: nn.Linear, scheme: str = "bitmod4",
                    group_size: int | None = None) -> QuantizedTensor:
    """Quantize the weight ``[out, in]`` of ``layer`` (groups along ``in``).

    Parameters
    ----------
    layer : nn.Linear
    scheme : str
        A :func:`golden.quantize.scheme_names` entry.
    group_size : int, optional
        Default: the scheme's.
    """
    if not isinstance(layer, nn.Linear):
        raise ValueError(f"expected an nn.Linear, got {type(layer).__name__}")
    weight = layer.weight.detach().to("cpu", torch.float64).numpy()
    return quantize(weight, scheme, group_size)


class QuantLinear(nn.Module):
    """A Linear layer with group-quantized weights: ``y = x @ W_deq.T + bias``.

    Parameters
    ----------
    qweight : QuantizedTensor
        Quantized weight ``[out, in]``.
    bias : tensor or array, optional
        Bias ``[out]`` (kept in float32).

    Attributes
    ----------
    qweight : QuantizedTensor
    weight : buffer, float32 ``[out, in]``, the dequantized weight.
    bias : buffer or None
    """

    def __init__(self, qweight: QuantizedTensor, bias=None) -> None:
        super().__init__()
        self.qweight = qweight
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("weight", torch.from_numpy(
            np.ascontiguousarray(qweight.dequantize(), dtype=np.float32)))
        if bias is not None:
            bias = torch.as_tensor(np.asarray(
                bias.detach().cpu() if isinstance(bias, torch.Tensor) else bias,
                dtype=np.float32))
            if bias.shape != (self.out_features,):
                raise ValueError(f"bias has shape {tuple(bias.shape)}, "
                                 f"expected ({self.out_features},)")
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, layer: nn.Linear, scheme: str = "bitmod4",
                    group_size: int | None = None) -> QuantLinear:
        """Quantize ``layer`` and wrap it (keeps its bias)."""
        return cls(quantize_linear(layer, scheme, group_size), layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.linear(x.to(torch.float32), self.weight, self.bias)

    def extra_repr(self) -> str:
        q = self.qweight
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scheme={q.scheme}, group_size={q.group_size}, bias={self.bias is not None}")
