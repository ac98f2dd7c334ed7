"""models.datapath: the golden core model as a Linear backend, beside golden.gemm."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

from bitmod.golden import gemm as ggemm
from bitmod.models import datapath
from bitmod.models.eval import swap_linears


def _template(act_format="fp16"):
    return ggemm.ArrayConfig(group_size=32, formats=("int4",), max_groups=4,
                             act_format=act_format)


def test_backend_equals_gemm_on_the_rounded_operands():
    """The backend's output is golden.gemm of the FP16-rounded input, bit for bit, for a
    symmetric, a BitMoD and an asymmetric scheme, and the record holds the operands."""
    rng = np.random.default_rng(0)
    weights = {"a": rng.standard_normal((24, 96)), "b": rng.standard_normal((8, 100)) + 0.2}
    for scheme in ("int4", "bitmod4", "int4_asym"):
        qts = datapath.quantize_layer_weights(weights, scheme, 32)
        calls = []
        backend = datapath.datapath_backend(qts, _template(), record=calls)
        for name, w in weights.items():
            x = rng.standard_normal((5, w.shape[1])).astype(np.float32)
            y = backend(name, torch.from_numpy(x))
            cfg = datapath.layer_config(_template(), qts[name])
            ref = ggemm.gemm(x.astype(np.float16), qts[name], cfg)
            np.testing.assert_array_equal(y.view(np.uint32), ref.y.view(np.uint32))
            call = calls[-1]
            assert call.name == name and call.index == len(calls) - 1
            np.testing.assert_array_equal(call.x, x.astype(np.float16).view(np.uint16))
            np.testing.assert_array_equal(call.codes, ref.codes.astype(np.uint32))
        assert qts["b"].n_groups == 4  # K = 100 keeps a last group of 4


def test_activation_formats_and_errors():
    x = np.array([[1.0, -2.5, 3e-3, 70000.0]], np.float32)
    with pytest.raises(ValueError, match=r"layer L: activations overflow FP16 .*bf16"):
        datapath.activation_operand("L", x, _template())
    bits, scale = datapath.activation_operand("L", x, _template(act_format="bf16"))
    assert scale is None
    np.testing.assert_array_equal(bits, x.astype(ml_dtypes.bfloat16).view(np.uint16))
    codes, scale = datapath.activation_operand("L", x, _template(act_format="int8"))
    assert codes.dtype == np.int8 and scale.shape == (1,)
    with pytest.raises(ValueError, match="layer L: activations contain NaN/Inf"):
        datapath.activation_operand("L", np.array([[np.nan]], np.float32), _template())
    spread = np.ones((2, 64))
    spread[1, 32:] = 2.0 ** -8  # layer b's channel 1: blocks 8 binades apart
    with pytest.raises(ValueError, match="layer b: scheme 'mxfp4': channel 1's"):
        datapath.quantize_layer_weights({"a": np.ones((2, 64)), "b": spread}, "mxfp4", None)
    mx = datapath.quantize_layer_weights({"a": np.ones((2, 64))}, "mxfp4", None)["a"]
    assert mx.scale_format == "int8" and mx.group_size == 32  # MX's own block size
    folded = datapath.quantize_layer_weights({"a": np.ones((2, 64))}, "int4_asym", 32)["a"]
    assert folded.formats == ("int5",) and folded.zero_points is None


def test_backend_in_a_torch_model_and_unknown_layer():
    """Inside swap_linears: bias added after the datapath's GEMM; a layer without weights is
    refused by name."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    weights = {"0": net[0].weight.detach().double().numpy()}
    qts = datapath.quantize_layer_weights(weights, "int4", 32)
    x = torch.randn(3, 64)
    backend = datapath.datapath_backend(qts, _template())
    with swap_linears(net, backend, names=["0"]):
        y = net[0](x)
    expect = ggemm.gemm(x.numpy().astype(np.float16), qts["0"],
                        datapath.layer_config(_template(), qts["0"])).y
    torch.testing.assert_close(y, torch.from_numpy(expect) + net[0].bias, rtol=0, atol=0)
    with pytest.raises(ValueError, match="no weights for layer '2'"), \
            swap_linears(net, backend, names=["2"]):
        net(x)
