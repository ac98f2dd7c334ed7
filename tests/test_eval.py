"""Tests for models.eval: Linear backends, layer swapping and perplexity, on a tiny llama."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional
from transformers import LlamaConfig, LlamaForCausalLM

from bitmod.golden.quantize import quantize
from bitmod.models import eval as ev
from bitmod.models.torch_layers import QuantLinear

BLOCK_LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


@pytest.fixture(scope="module")
def tiny():
    """A random 2-block llama (hidden 64, FFN 96: K = 96 for down_proj), float32."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=96,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def windows():
    return ev.token_windows(torch.randint(0, 101, (200,), generator=torch.Generator()
                                          .manual_seed(1)), 3, 24)


def logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits


def test_linear_layers_exclude_lm_head(tiny):
    names = list(ev.linear_layers(tiny))
    assert names == [f"model.layers.{i}.{s}" for i in range(2) for s in BLOCK_LINEARS]
    assert list(ev.linear_layers(tiny, include_output=True)) == [*names, "lm_head"]


def test_fp32_backend_is_exact_and_swap_restores(tiny, windows):
    before = dict(tiny.named_modules())
    ref = logits(tiny, windows)
    layers = ev.linear_layers(tiny)
    with ev.swap_linears(tiny, ev.fp32_backend(layers)) as swapped:
        assert len(swapped) == 14
        assert all(isinstance(tiny.get_submodule(n), ev.BackendLinear) for n in layers)
        out = logits(tiny, windows)
    assert torch.equal(out, ref)
    after = dict(tiny.named_modules())
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_swap_restores_after_exception(tiny):
    layers = ev.linear_layers(tiny)
    with pytest.raises(RuntimeError, match="boom"), \
            ev.swap_linears(tiny, ev.fp32_backend(layers)):
        raise RuntimeError("boom")
    assert all(tiny.get_submodule(n) is m for n, m in layers.items())


def test_backend_sees_named_2d_float32_activations_in_execution_order(tiny):
    calls = []
    weights = {n: m.weight.detach() for n, m in ev.linear_layers(tiny).items()}

    def backend(name, x):
        calls.append((name, tuple(x.shape), x.dtype, x.is_contiguous()))
        return x @ weights[name].T

    ids = torch.randint(0, 101, (2, 5), generator=torch.Generator().manual_seed(2))
    with ev.swap_linears(tiny, backend):
        logits(tiny, ids)
    names = list(ev.linear_layers(tiny))
    assert [c[0] for c in calls] == names  # registration order is execution order
    for name, shape, dtype, contiguous in calls:
        assert shape == (10, weights[name].shape[1])  # batch 2 x 5 tokens flattened
        assert dtype == torch.float32 and contiguous


def test_swap_selected_names_only(tiny):
    seen = []
    layers = ev.linear_layers(tiny, include_output=True)
    fp32 = ev.fp32_backend(layers)

    def backend(name, x):
        seen.append(name)
        return fp32(name, x)

    with ev.swap_linears(tiny, backend, ["lm_head", "model.layers.1.mlp.up_proj"]):
        logits(tiny, torch.zeros((1, 3), dtype=torch.int64))
    assert seen == ["model.layers.1.mlp.up_proj", "lm_head"]
    with pytest.raises(ValueError, match=r"'model\.norm' is not an nn\.Linear of the model"), \
            ev.swap_linears(tiny, backend, ["model.norm"]):
        pass


def test_backend_linear_adds_bias_and_checks_shapes():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 3, bias=False))
    x = torch.randn(2, 3, 8)
    with ev.swap_linears(model, lambda name, a: torch.zeros(a.shape[0], 4 if name == "0" else 3)):
        y0 = model[0](x)
        assert torch.equal(y0, model[0].bias.detach().expand(2, 3, 4))
        assert torch.equal(model(x), torch.zeros(2, 3, 3))
        with pytest.raises(ValueError, match="0: input has 7 features, expected 8"):
            model[0](torch.zeros(2, 7))
    with ev.swap_linears(model, lambda name, a: torch.zeros(a.shape[0], 5)), \
            pytest.raises(ValueError, match=r"0: backend returned \(6, 5\), expected \(6, 4\)"):
        model(x)
    with pytest.raises(ValueError, match="backend has no weight for layer '1'"):
        ev.fp32_backend({"0": model[0]})("1", torch.zeros(1, 4))


def test_backend_may_return_numpy(tiny, windows):
    weights = {n: m.weight.detach().double().numpy() for n, m in ev.linear_layers(tiny).items()}
    ref = logits(tiny, windows)
    with ev.swap_linears(tiny, lambda name, x: x.numpy() @ weights[name].T):  # float64 GEMM
        out = logits(tiny, windows)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    with ev.swap_linears(tiny, lambda name, x: [0.0]), \
            pytest.raises(ValueError, match="backend returned list, expected"):
        logits(tiny, windows)


def test_fp32_backend_with_bias_matches_linear_to_rounding():
    # F.linear fuses the bias into the GEMM (addmm); BackendLinear adds it afterwards
    torch.manual_seed(4)
    layer = nn.Linear(64, 32)
    x = torch.randn(10, 64)
    with ev.swap_linears(nn.Sequential(layer), ev.fp32_backend({"0": layer})) as swapped:
        y = swapped["0"](x)
    torch.testing.assert_close(y, layer(x).detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scheme,group_size", [("int4_asym", 64), ("bitmod4", 64),
                                               ("bitmod3", 32), ("fp4", 128)])
def test_fake_quant_weights_are_golden_dequantized(tiny, scheme, group_size):
    layers = ev.linear_layers(tiny)
    deq = ev.fake_quant_weights(layers, scheme, group_size)
    assert list(deq) == list(layers)
    for name, layer in layers.items():
        w = layer.weight.detach().double().numpy()
        # down_proj has K = 96: with G = 64 its last group is ragged (32), with G = 128 the
        # only group is ragged (96); quantize() handles both
        ref = quantize(w, scheme, group_size=group_size).dequantize().astype(np.float32)
        assert deq[name].dtype == torch.float32
        np.testing.assert_array_equal(deq[name].numpy(), ref)
        ql = QuantLinear.from_linear(layer, scheme, group_size)
        assert torch.equal(deq[name], ql.weight)


def test_fake_quant_backend_runs_quantized_weights(tiny, windows):
    layers = ev.linear_layers(tiny)
    deq = ev.fake_quant_weights(layers, "int4_asym", 32)
    backend = ev.fake_quant_backend(layers, "int4_asym", 32)
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(5))
    name = "model.layers.0.self_attn.q_proj"
    assert torch.equal(backend(name, x), functional.linear(x, deq[name]))
    with ev.swap_linears(tiny, backend):
        quantized = logits(tiny, windows)
    assert not torch.equal(quantized, logits(tiny, windows))


def test_fake_quant_backend_fp32_and_bad_scheme(tiny, windows):
    layers = ev.linear_layers(tiny)
    with ev.swap_linears(tiny, ev.fake_quant_backend(layers, "fp32")):
        out = logits(tiny, windows)
    assert torch.equal(out, logits(tiny, windows))
    with pytest.raises(ValueError, match="unknown scheme 'int5'"):
        ev.fake_quant_backend(layers, "int5")


def test_fake_quant_scale_format_is_passed(tiny):
    layers = {n: m for n, m in ev.linear_layers(tiny).items() if n.endswith("q_proj")}
    deq = ev.fake_quant_weights(layers, "bitmod4", 64, scale_format="int8")
    for name, layer in layers.items():
        ref = quantize(layer.weight.detach().numpy(), "bitmod4", 64, "int8").dequantize()
        np.testing.assert_array_equal(deq[name].numpy(), ref.astype(np.float32))


def test_perplexity_definition(tiny, windows):
    result = ev.perplexity(tiny, windows)
    nll = 0.0
    for w in windows:
        lg = logits(tiny, w[None])[0, :-1].double()
        nll += float(functional.cross_entropy(lg, w[1:], reduction="sum"))
    assert result.n_predicted == 3 * 23 and len(result.window_nll) == 3
    assert math.isclose(result.nll_sum, nll, rel_tol=1e-12)
    assert math.isclose(result.ppl, math.exp(nll / 69), rel_tol=1e-12)
    assert result.nll_mean == result.nll_sum / 69
    # windows are independent: one window at a time gives the same per-window sums
    for i, w in enumerate(windows):
        assert ev.perplexity(tiny, w[None]).window_nll == (result.window_nll[i],)
    # a random model predicts about uniformly: ppl near the vocabulary size
    assert 30 < result.ppl < 400


def test_perplexity_with_fp32_backend_is_identical(tiny, windows):
    plain = ev.perplexity(tiny, windows)
    swapped = ev.perplexity(tiny, windows, ev.fp32_backend(ev.linear_layers(tiny)))
    assert swapped.window_nll == plain.window_nll
    assert all(isinstance(m, nn.Linear) for n, m in ev.linear_layers(tiny).items())


def test_token_windows():
    tokens = torch.arange(100)
    w = ev.token_windows(tokens, 3, 30)
    assert w.shape == (3, 30) and w.dtype == torch.int64
    assert torch.equal(w.flatten(), torch.arange(90))
    assert torch.equal(ev.token_windows([5, 6, 7, 8], 2, 2), torch.tensor([[5, 6], [7, 8]]))


@pytest.mark.parametrize("tokens,n,c,pattern", [
    (torch.arange(10), 2, 6, "2 windows of 6 tokens need 12 tokens, the stream has 10"),
    (torch.arange(10), 1, 1, "window must be an integer >= 2"),
    (torch.arange(10), 0, 2, "number of windows must be a positive integer"),
    (torch.zeros(2, 5, dtype=torch.int64), 1, 2, "1-D integer sequence"),
    (torch.zeros(10), 1, 2, "1-D integer sequence"),
])
def test_token_windows_errors(tokens, n, c, pattern):
    with pytest.raises(ValueError, match=pattern):
        ev.token_windows(tokens, n, c)


def test_perplexity_rejects_bad_windows(tiny):
    with pytest.raises(ValueError, match="windows must be an int64 tensor"):
        ev.perplexity(tiny, torch.zeros(2, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="windows must be an int64 tensor"):
        ev.perplexity(tiny, torch.zeros(5, dtype=torch.int64))
