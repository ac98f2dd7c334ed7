"""Model evaluation with pluggable Linear-layer arithmetic: perplexity and backends.

Linear replacement
------------------
:func:`swap_linears` replaces selected ``nn.Linear`` modules of a model by
:class:`BackendLinear` modules that compute::

    y = backend(name, x.reshape(-1, K)).reshape(*x.shape[:-1], N) + bias

A **backend** is any callable ``backend(name, x) -> y`` taking the layer name (as in
``model.named_modules()``, e.g. ``"model.layers.0.self_attn.q_proj"``) and a float32 activation
tensor ``x`` of shape ``[tokens, K]`` (batch dimensions flattened, contiguous, CPU; called
under ``torch.inference_mode`` during :func:`perplexity`; ``x.numpy()`` gives a NumPy view)
and returning ``y`` of shape ``[tokens, N]``: a torch tensor or a NumPy array, converted to
float32 (a float64 result is rounded once). The bias (if the layer has one) is added
afterwards by :class:`BackendLinear`, so a backend computes ``x @ W.T`` only. Backends here:

* :func:`fp32_backend`: the layer's own float32 weight (``F.linear(x, W)``), i.e. the model
  unchanged: bit-identical for layers without bias (all of SmolLM2); with a bias, equal up to
  float32 rounding (``F.linear`` fuses the bias into the GEMM, here it is added after it);
* :func:`fake_quant_backend`: weights group-quantized by :func:`bitmod.golden.quantize.quantize`
  and dequantized once (rounded to float32), then ``F.linear``;
* a bit-exact hardware datapath can be plugged in with the same signature.

Which layers: :func:`linear_layers` takes every ``nn.Linear`` of the model **except the output
layer** (``model.get_output_embeddings()``, the LM head). The BitMoD paper quantizes the linear
layers of the transformer blocks (attention projections and FFN) and keeps the embeddings and
the LM head in high precision; for SmolLM2 the LM head is moreover the token embedding table
itself (tied weights, stored as Q8_0 in the file). Embeddings are ``nn.Embedding`` and never
selected. For BERT-type encoders (MiniLM) this gives the 36 encoder projections plus the
pooler's dense layer.

Perplexity
----------
:func:`perplexity` on windows ``tokens[i*C : (i+1)*C]`` for ``i = 0 .. n-1`` (non-overlapping,
from the start of the token stream, no BOS inserted, each window evaluated independently with
no context from the previous one). Within a window the model predicts token ``t+1`` from
tokens ``0..t`` for ``t = 0 .. C-2``, so ``C - 1`` predictions per window; the first token of a
window is never predicted. With ``p`` the softmax of the float32 logits computed in float64::

    NLL = sum over windows and t of  -log p(token[t+1] | token[0..t])     (float64)
    PPL = exp(NLL / (n * (C - 1)))

This is the usual Hugging Face definition for ``stride == max_length``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional

__all__ = [
    "Backend",
    "BackendLinear",
    "PerplexityResult",
    "fake_quant_backend",
    "fake_quant_weights",
    "fp32_backend",
    "linear_layers",
    "perplexity",
    "swap_linears",
    "token_windows",
    "window_logits",
]

#: ``backend(name, x[tokens, K] float32 tensor) -> y[tokens, N]`` (tensor or NumPy array).
Backend = Callable[[str, torch.Tensor], torch.Tensor]


class BackendLinear(nn.Module):
    """Stand-in for an ``nn.Linear``: ``y = backend(name, x) + bias``.

    Parameters
    ----------
    name : str
        Layer name passed to the backend.
    linear : nn.Linear
        The replaced layer (its sizes and bias are used; its weight is not).
    backend : Backend
    """

    def __init__(self, name: str, linear: nn.Linear, backend: Backend) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"{name}: expected an nn.Linear, got {type(linear).__name__}")
        self.name = name
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.backend = backend
        self.bias = linear.bias  # shared with the original layer (not copied)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{self.name}: input has {x.shape[-1]} features, expected "
                             f"{self.in_features}")
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).to(torch.float32).contiguous()
        y = self.backend(self.name, flat)
        if isinstance(y, np.ndarray):
            y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (flat.shape[0],
                                                                 self.out_features):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"{self.name}: backend returned {shape}, expected "
                             f"({flat.shape[0]}, {self.out_features})")
        y = y.to(torch.float32).reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


def linear_layers(model: nn.Module, *, include_output: bool = False) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` of ``model`` by name, in registration order.

    For the llama and BERT models of :mod:`bitmod.models` registration order is execution
    order (q, k, v, o, gate, up, down per block; query, key, value, attention output,
    intermediate, output per layer, then the pooler).

    Parameters
    ----------
    model : nn.Module
    include_output : bool
        Also take the output layer (``model.get_output_embeddings()``, the LM head).
    """
    head = None
    if not include_output and hasattr(model, "get_output_embeddings"):
        head = model.get_output_embeddings()
    return {name: module for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and module is not head}


@contextlib.contextmanager
def swap_linears(model: nn.Module, backend: Backend,
                 names: list[str] | None = None) -> Iterator[dict[str, BackendLinear]]:
    """Context manager: run ``model`` with selected Linear layers computed by ``backend``.

    The original modules are put back on exit (also on an exception).

    Parameters
    ----------
    model : nn.Module
    backend : Backend
    names : list of str, optional
        Layers to replace (default: :func:`linear_layers`).

    Yields
    ------
    dict
        Name -> the :class:`BackendLinear` now in the model.
    """
    available = linear_layers(model, include_output=True)
    names = list(linear_layers(model)) if names is None else list(names)
    for name in names:
        if name not in available:
            raise ValueError(f"{name!r} is not an nn.Linear of the model")
    originals, swapped = {}, {}
    try:
        for name in names:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            originals[name] = (parent, attr, available[name])
            swapped[name] = BackendLinear(name, available[name], backend)
            setattr(parent, attr, swapped[name])
        yield swapped
    finally:
        for parent, attr, module in originals.values():
            setattr(parent, attr, module)


def fp32_backend(layers: Mapping[str, nn.Linear]) -> Backend:
    """Backend computing ``F.linear(x, W)`` with each layer's own (float32) weight.

    Parameters
    ----------
    layers : mapping
        Name -> ``nn.Linear`` (e.g. :func:`linear_layers`).
    """
    weights = {name: layer.weight.detach() for name, layer in layers.items()}
    return _weight_backend(weights)


def _weight_backend(weights: Mapping[str, torch.Tensor]) -> Backend:
    def backend(name: str, x: torch.Tensor) -> torch.Tensor:
        if name not in weights:
            raise ValueError(f"backend has no weight for layer {name!r}")
        return functional.linear(x, weights[name])

    return backend


def fake_quant_weights(layers: Mapping[str, nn.Linear], scheme: str, group_size: int = 128,
                       scale_format: str | None = None) -> dict[str, torch.Tensor]:
    """Group-quantize and dequantize every layer's weight: name -> float32 ``[N, K]``.

    ``bitmod.golden.quantize.quantize(W, scheme, group_size, scale_format).dequantize()``
    rounded to float32. Groups run along K; a K that is not a multiple of ``group_size``
    keeps its last, shorter group.

    Parameters
    ----------
    layers : mapping
        Name -> ``nn.Linear``.
    scheme : str
        A :func:`bitmod.golden.quantize.scheme_names` entry.
    group_size : int
    scale_format : str, optional
        Default: the scheme's.
    """
    from bitmod.golden.quantize import quantize

    out = {}
    for name, layer in layers.items():
        w = layer.weight.detach().cpu().to(torch.float64).numpy()
        deq = quantize(w, scheme, group_size=group_size, scale_format=scale_format).dequantize()
        out[name] = torch.from_numpy(np.ascontiguousarray(deq, dtype=np.float32))
    return out


def fake_quant_backend(layers: Mapping[str, nn.Linear], scheme: str, group_size: int = 128,
                       scale_format: str | None = None) -> Backend:
    """Backend with weight fake-quantization (:func:`fake_quant_weights`).

    ``scheme="fp32"`` means no quantization (:func:`fp32_backend`); any other name must be a
    :func:`bitmod.golden.quantize.scheme_names` entry. All weights are quantized here, once.
    """
    if scheme == "fp32":
        return fp32_backend(layers)
    from bitmod.golden.quantize import get_scheme

    get_scheme(scheme)  # ValueError listing the valid names, before any work
    return _weight_backend(fake_quant_weights(layers, scheme, group_size, scale_format))


def token_windows(tokens, n_windows: int, window: int) -> torch.Tensor:
    """The first ``n_windows`` non-overlapping windows of ``window`` tokens: int64 ``[n, C]``.

    Raises
    ------
    ValueError
        If ``window < 2``, ``n_windows < 1`` or the stream has fewer than
        ``n_windows * window`` tokens.
    """
    tokens = torch.as_tensor(tokens)
    if tokens.ndim != 1 or tokens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"tokens must be a 1-D integer sequence, got {tokens.dtype} of shape "
                         f"{tuple(tokens.shape)}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an integer >= 2 tokens, got {window!r}")
    if isinstance(n_windows, bool) or not isinstance(n_windows, int) or n_windows < 1:
        raise ValueError(f"number of windows must be a positive integer, got {n_windows!r}")
    if tokens.numel() < n_windows * window:
        raise ValueError(f"{n_windows} windows of {window} tokens need {n_windows * window} "
                         f"tokens, the stream has {tokens.numel()}")
    return tokens[: n_windows * window].to(torch.int64).reshape(n_windows, window)


@dataclasses.dataclass(frozen=True)
class PerplexityResult:
    """Result of :func:`perplexity`.

    Attributes
    ----------
    nll_sum : float
        Total negative log-likelihood (nats, float64).
    n_predicted : int
        Predicted tokens, ``n * (C - 1)``.
    window_nll : tuple of float
        NLL sum of each window.
    seconds : float
        Wall time of the forward passes.
    """

    nll_sum: float
    n_predicted: int
    window_nll: tuple[float, ...]
    seconds: float

    @property
    def nll_mean(self) -> float:
        """Mean NLL per predicted token (nats)."""
        return self.nll_sum / self.n_predicted

    @property
    def ppl(self) -> float:
        """``exp(nll_mean)``."""
        return math.exp(self.nll_mean)


def window_logits(model: nn.Module, window: torch.Tensor) -> torch.Tensor:
    """Float32 logits ``[C, vocab]`` of a causal LM on one window (no KV cache)."""
    out = model(input_ids=window.reshape(1, -1), use_cache=False)
    return out.logits[0]


def perplexity(model: nn.Module, windows: torch.Tensor,
               backend: Backend | None = None) -> PerplexityResult:
    """Perplexity of a causal LM (module docstring for the exact definition).

    Parameters
    ----------
    model : nn.Module
        A Hugging Face causal LM (``model(input_ids=...).logits``).
    windows : int64 tensor [n, C]
        Token windows (:func:`token_windows`).
    backend : Backend, optional
        Computes the :func:`linear_layers` of the model (default: the model as it is).
    """
    windows = torch.as_tensor(windows)
    if windows.ndim != 2 or windows.shape[1] < 2 or windows.dtype != torch.int64:
        raise ValueError(f"windows must be an int64 tensor [n, C >= 2], got {windows.dtype} of "
                         f"shape {tuple(windows.shape)}")
    swap = contextlib.nullcontext() if backend is None else swap_linears(model, backend)
    nlls = []
    start = time.perf_counter()
    with swap, torch.inference_mode():
        for window in windows:
            logp = torch.log_softmax(window_logits(model, window)[:-1].to(torch.float64), dim=-1)
            nlls.append(-float(logp.gather(1, window[1:, None]).sum()))
    seconds = time.perf_counter() - start
    return PerplexityResult(nll_sum=math.fsum(nlls),
                            n_predicted=int(windows.shape[0] * (windows.shape[1] - 1)),
                            window_nll=tuple(nlls), seconds=seconds)
