"""The accelerator's datapath as a Linear backend: every GEMM through the golden core model.

:func:`datapath_backend` is a :data:`bitmod.models.eval.Backend` that computes ``x @ W.T`` the
way the accelerator core does (:func:`bitmod.golden.gemm.gemm`, docs/array.md):

1. the weights are group-quantized once per layer with the scheme's element formats and INT8
   second-level group scales (``scale_format="int8"``: the core multiplies by integer
   scale-code, the per-channel FP32 factor stays on the host), as the tensor the core runs
   (:func:`bitmod.golden.gemm.core_tensor`): asymmetric schemes with their zero points folded
   into signed levels ``code - z``, MX schemes with their E8M0 block scales as power-of-two
   scale codes;
2. each call rounds the float32 activations to the core's activation format: FP16 or BF16
   (round to nearest even; an FP16 overflow is an error naming the layer, since the core has no
   Inf input), or INT8 codes with a per-token FP32 scale (``round(x / s)``, ``s = max|x| /
   127``);
3. the golden core model aligns the activations into block floating point, sums exactly per
   group, scales by the group-scale codes, drains through the output rounding (FP32 or FP16)
   and applies the host's FP32 factors.

The result is what the RTL returns for the same operands, bit for bit (``bitmod verify``
checks that layer by layer). With ``record`` every call is kept as a :class:`LayerCall`: the
operands exactly as the core takes them and the golden output codes, which is what a run on
the RTL replays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from bitmod.golden import gemm as ggemm
from bitmod.golden.quantize import QuantizedTensor

__all__ = [
    "LayerCall",
    "activation_operand",
    "datapath_backend",
    "layer_config",
    "quantize_layer_weights",
]


@dataclasses.dataclass(frozen=True)
class LayerCall:
    """One GEMM of a forward pass on the datapath, as the core takes and returns it.

    Attributes
    ----------
    name : str
        Layer name (``model.named_modules()``).
    index : int
        Order of the call in the forward pass (0, 1, ...).
    x : ndarray [M, K]
        Activation operand: 16-bit FP16/BF16 patterns (uint16) or INT8 codes.
    act_scale : ndarray [M] of float32 or None
        Per-token scales of INT8 activations.
    codes : ndarray [M, N]
        Golden output codes of the drain (uint32; FP16 codes in the low 16 bits).
    y : ndarray [M, N] of float32
        The layer's output before the bias (codes times the host's factors).
    """

    name: str
    index: int
    x: np.ndarray
    act_scale: np.ndarray | None
    codes: np.ndarray
    y: np.ndarray


def quantize_layer_weights(weights: Mapping[str, np.ndarray], scheme: str,
                           group_size: int | None = 128, zero_points: bool = False,
                           pe_kind_name: str = "bitserial") -> dict[str, QuantizedTensor]:
    """Quantize each ``[N, K]`` weight for the core: name -> ``QuantizedTensor``.

    ``scale_format="int8"`` (second-level INT8 group-scale codes; MX schemes keep their E8M0
    block scales); groups of ``group_size`` along K (``None``: the scheme's own, 32 for MX), a
    K that is not a multiple of it keeps its last, shorter group. Each tensor is the one the
    core runs (:func:`bitmod.golden.gemm.core_tensor`: zero points folded into signed levels,
    MX scales as power-of-two codes; the same weights; with ``zero_points``, for a core that
    corrects by them, the offset codes and zero points instead; for ``pe_kind_name`` PEs,
    which may take no mixtures, BitMoD's mixture as its integer values). Raises
    ``ValueError`` naming the scheme or layer the datapath does not run.
    """
    out = {}
    for name, w in weights.items():
        try:
            qt = ggemm.quantize_for_core(np.asarray(w, dtype=np.float64), scheme, group_size,
                                         zero_points, pe_kind_name)
        except ValueError as error:
            raise ValueError(f"layer {name}: {error}") from None
        ggemm.check_weights(qt)
        out[name] = qt
    return out


def layer_config(template: ggemm.ArrayConfig, qt: QuantizedTensor) -> ggemm.ArrayConfig:
    """``template`` with the weight formats and group size of ``qt`` (the rest as given)."""
    if tuple(qt.formats) == template.formats and qt.group_size == template.group_size:
        return template
    return dataclasses.replace(template, formats=tuple(qt.formats), group_size=qt.group_size)


def activation_operand(name: str, x: np.ndarray, cfg: ggemm.ArrayConfig
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    """Float activations ``[M, K]`` -> the core's operand and the INT8 per-token scales.

    FP16/BF16: 16-bit patterns (uint16), rounded to nearest even; INT8: codes and scales
    (:func:`bitmod.golden.gemm.quantize_activations_int8`).

    Raises
    ------
    ValueError
        If an activation is NaN/Inf or overflows FP16, naming the layer.
    """
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"layer {name}: activations contain NaN/Inf")
    if cfg.act_format == "int8":
        return ggemm.quantize_activations_int8(x)
    if cfg.act_format == "fp16":
        with np.errstate(over="ignore"):  # an overflow is reported below, by layer name
            half = x.astype(np.float16)
        if not np.isfinite(half).all():
            raise ValueError(f"layer {name}: activations overflow FP16 (max |x| = "
                             f"{float(np.abs(x).max()):.6g} > 65504); use the bf16 activation "
                             "format")
        return half.view(np.uint16), None
    import ml_dtypes  # golden's BF16 rounding (RNE) as well

    return x.astype(ml_dtypes.bfloat16).view(np.uint16), None


def datapath_backend(weights: Mapping[str, QuantizedTensor], template: ggemm.ArrayConfig,
                     record: list | None = None):
    """A Linear backend computing every GEMM through :func:`bitmod.golden.gemm.gemm`.

    Parameters
    ----------
    weights : mapping
        Name -> quantized weight (:func:`quantize_layer_weights`).
    template : ArrayConfig
        Activation and output formats, BFP mantissa width and exponent window, and
        ``max_groups`` (at least the largest layer's group count); formats and group size are
        taken from each layer's weights (:func:`layer_config`).
    record : list, optional
        Receives a :class:`LayerCall` per call, in call order.
    """
    levels = {}

    def backend(name: str, x) -> np.ndarray:
        if name not in weights:
            raise ValueError(f"datapath backend has no weights for layer {name!r}")
        qt = weights[name]
        cfg = layer_config(template, qt)
        operand, act_scale = activation_operand(name, np.asarray(x), cfg)
        if name not in levels:  # the term decomposition once per layer, not per call
            levels[name] = ggemm.weight_levels(qt)
        result = ggemm.gemm(operand, qt, cfg, act_scale, levels=levels[name])
        if record is not None:
            record.append(LayerCall(name, len(record), operand, act_scale,
                                    result.codes.astype(np.uint32), result.y))
        return result.y

    return backend
