"""Tests for models.torch_layers: nn.Linear quantization and QuantLinear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from bitmod.golden.quantize import QuantizedTensor, quantize
from bitmod.models.torch_layers import QuantLinear, quantize_linear


def make_linear(n_in=256, n_out=48, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out, bias=bias)


def test_quantize_linear_matches_numpy_path():
    layer = make_linear()
    qt = quantize_linear(layer, "bitmod4")
    assert isinstance(qt, QuantizedTensor) and qt.shape == (48, 256)
    ref = quantize(layer.weight.detach().numpy(), "bitmod4")
    assert qt.equals(ref)


@pytest.mark.parametrize("scheme", ["bitmod4", "bitmod3", "int4_asym", "mxfp4", "int8"])
@pytest.mark.parametrize("bias", [True, False])
def test_quant_linear_forward_is_linear_with_dequantized_weight(scheme, bias):
    layer = make_linear(bias=bias)
    q = QuantLinear.from_linear(layer, scheme)
    x = torch.randn(5, 7, 256, generator=torch.Generator().manual_seed(1))
    w = torch.from_numpy(q.qweight.dequantize().astype(np.float32))
    expect = functional.linear(x, w, layer.bias.detach() if bias else None)
    assert torch.equal(q(x), expect)
    assert (q.bias is None) == (not bias)
    assert "scheme=" + scheme in repr(q)


def test_int8_close_to_float():
    layer = make_linear(512, 64)
    q = QuantLinear.from_linear(layer, "int8")
    x = torch.randn(32, 512, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y, yq = layer(x), q(x)
    assert float(torch.linalg.norm(yq - y) / torch.linalg.norm(y)) < 5e-3


def test_low_bit_error_ordering():
    layer = make_linear(512, 64)
    x = torch.randn(32, 512, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = layer(x)

    @torch.no_grad()
    def err(scheme):
        return float(torch.linalg.norm(QuantLinear.from_linear(layer, scheme)(x) - y))

    assert err("int8") < err("int6") < err("bitmod4") < err("bitmod3")


def test_from_quantized_tensor_and_bias_checks():
    qt = quantize(np.random.default_rng(0).standard_normal((8, 128)), "bitmod4")
    q = QuantLinear(qt, np.arange(8, dtype=np.float64))
    assert q.bias.dtype == torch.float32 and q.weight.shape == (8, 128)
    assert torch.equal(q(torch.zeros(2, 128)), torch.arange(8, dtype=torch.float32).expand(2, 8))
    with pytest.raises(ValueError, match="bias has shape"):
        QuantLinear(qt, np.zeros(5))
    with pytest.raises(ValueError, match=r"expected an nn\.Linear"):
        quantize_linear(nn.Conv1d(2, 2, 1), "bitmod4")
    with pytest.raises(ValueError, match="unknown scheme"):
        QuantLinear.from_linear(make_linear(), "nope")


def test_state_dict_holds_the_quantized_tensor():
    q = QuantLinear.from_linear(make_linear(), "bitmod4")
    # weight is derived from qweight: the quantized tensor (extra state) is the state
    assert set(q.state_dict()) == {"_extra_state", "bias"}


@pytest.mark.parametrize("scheme", ["bitmod4_int8scale", "int4_asym", "mxfp4"])
def test_load_state_dict_replaces_qweight_and_weight(tmp_path, scheme):
    """Issue 15 item 17: load_state_dict used to leave qweight stale (only the float weight
    buffer was loaded)."""
    source = QuantLinear.from_linear(make_linear(seed=1), scheme)
    target = QuantLinear.from_linear(make_linear(seed=2), scheme)
    assert not target.qweight.equals(source.qweight)
    path = tmp_path / "layer.pt"
    torch.save(source.state_dict(), path)
    target.load_state_dict(torch.load(path, weights_only=True))
    assert target.qweight.equals(source.qweight)
    assert torch.equal(target.weight, source.weight)
    assert torch.equal(target.bias, source.bias)
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(4))
    assert torch.equal(target(x), source(x))


def test_load_state_dict_refuses_a_float_linear_and_another_shape():
    q = QuantLinear.from_linear(make_linear(), "bitmod4")
    with pytest.raises(RuntimeError, match="_extra_state"):
        q.load_state_dict(make_linear().state_dict())
    other = QuantLinear.from_linear(make_linear(n_in=128), "bitmod4")
    with pytest.raises(ValueError, match="this layer 48x256"):
        q.load_state_dict(other.state_dict())


def test_float64_tensor_quantizes_like_numpy_and_complex_is_refused():
    """Issue 15 item 17: a float64 tensor was cast to float32 before quantizing."""
    w = np.zeros((2, 128))
    w[:, 0] = 7.0  # int4: scale 7 / 7 = 1 exactly
    w[:, 1] = 0.5 + 1e-10  # just above the 0/1 midpoint; a float32 cast lands on it (ties: 0)
    expect = quantize(w, "int4")
    assert expect.codes[0, 1] == 1
    assert quantize(torch.from_numpy(w), "int4").equals(expect)
    layer = nn.Linear(128, 2, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
    assert quantize_linear(layer, "int4").equals(expect)
    with pytest.raises(ValueError, match="real numeric tensor, got dtype complex64"):
        quantize(torch.ones(2, 8, dtype=torch.complex64), "bitmod4")
    with pytest.raises(ValueError, match="real numeric tensor, got dtype bool"):
        quantize(torch.ones(2, 8, dtype=torch.bool), "bitmod4")
