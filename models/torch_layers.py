"""PyTorch layer conversion: quantize an ``nn.Linear`` and run it with golden dequantized weights.

Named ``torch_layers`` rather than ``torch`` so that ``golden.torch`` can never be confused with
(or, when ``golden/`` is on ``sys.path``, shadow) the ``torch`` package.

:class:`QuantLinear` is the *accuracy* model of a quantized layer: its forward is
``F.linear(x, W_deq, bias)`` with ``W_deq = QuantizedTensor.dequantize()`` rounded once to
float32 (exact for FP16-scaled low-bit codes: a level has at most 5 significant bits and an
FP16 scale 11; INT8-scaled and wide formats can round in the last float32 bit).
Bit-exact hardware arithmetic (activation alignment, accumulator widths) is modelled
elsewhere in golden/; this layer answers "what does the quantized weight do to the output".

The quantized tensor is the layer's state: :meth:`QuantLinear.state_dict` holds ``bias`` and
the :class:`~golden.quantize.QuantizedTensor` (its arrays as tensors and its metadata, as the
module's extra state: ``torch.load(..., weights_only=True)`` reads it), and
:meth:`~torch.nn.Module.load_state_dict` rebuilds ``qweight`` from it, validated, and the
dequantized ``weight`` from ``qweight``. ``weight`` is derived, so it is not in the state dict.
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
    return quantize(layer.weight, scheme, group_size)  # float64, complex refused


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
    weight : buffer, float32 ``[out, in]``, the dequantized weight (not persistent: derived
        from ``qweight``).
    bias : buffer or None
    """

    _STATE_VERSION = 1

    def __init__(self, qweight: QuantizedTensor, bias=None) -> None:
        super().__init__()
        if not isinstance(qweight, QuantizedTensor):
            raise TypeError(f"qweight must be a QuantizedTensor, not {type(qweight).__name__}")
        self.qweight = qweight
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("weight", self._dequantized(qweight), persistent=False)
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

    @staticmethod
    def _dequantized(qweight: QuantizedTensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(qweight.dequantize(), dtype=np.float32))

    def get_extra_state(self) -> dict:
        """The quantized weight: metadata and arrays (tensors), for :meth:`state_dict`."""
        q = self.qweight
        return {
            "version": self._STATE_VERSION, "scheme": q.scheme, "formats": list(q.formats),
            "group_size": int(q.group_size), "bits": int(q.bits),
            "scale_format": q.scale_format,
            "arrays": {name: torch.from_numpy(np.ascontiguousarray(getattr(q, name)))
                       for name in QuantizedTensor._ARRAYS if getattr(q, name) is not None},
        }

    def set_extra_state(self, state) -> None:
        """Rebuild ``qweight`` (validated) and ``weight`` from :meth:`get_extra_state`'s dict.

        Raises
        ------
        ValueError
            Not a QuantLinear state, another version, or a shape other than this layer's.
        """
        if not isinstance(state, dict) or state.get("version") != self._STATE_VERSION:
            raise ValueError("not a QuantLinear state (or another version of it)")
        arrays = state.get("arrays", {})
        unknown = set(arrays) - set(QuantizedTensor._ARRAYS)
        if unknown:
            raise ValueError(f"unknown quantized-tensor arrays {sorted(unknown)}")
        qweight = QuantizedTensor(
            scheme=state["scheme"], formats=tuple(state["formats"]),
            group_size=state["group_size"], bits=state["bits"],
            scale_format=state["scale_format"],
            **{name: (arrays[name].detach().cpu().numpy() if name in arrays else None)
               for name in QuantizedTensor._ARRAYS})
        if qweight.shape != (self.out_features, self.in_features):
            raise ValueError(f"the state's weight is {qweight.shape[0]}x{qweight.shape[1]}, "
                             f"this layer {self.out_features}x{self.in_features}")
        self.qweight = qweight
        self.weight = self._dequantized(qweight).to(self.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.linear(x.to(torch.float32), self.weight, self.bias)

    def extra_repr(self) -> str:
        q = self.qweight
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scheme={q.scheme}, group_size={q.group_size}, bias={self.bias is not None}")
