"""Which split of WikiText-2 the samples come from (issue 22): the test split is shipped; the
train split is read through ``datasets`` online and refused at once, clearly, offline; the
recipe (and so the cache key) names the split."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tdcourse import store
from tdcourse.data import SHIPPED_SPLITS, SampleRecipe, build_samples, check_recipe, load_wikitext


class CharTokenizer:
    bos_token = None

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) % 100 for c in t] for t in texts]}

    def batch_decode(self, ids, **k):
        return ["".join(chr(65 + i % 26) for i in x) for x in ids]


def _offline(monkeypatch):
    import datasets

    def refuse(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", refuse)


def test_only_the_test_split_is_shipped_and_it_caps_n_at_1833():
    assert SHIPPED_SPLITS == ("test",)
    with pytest.raises(ValueError, match=r"at most 1833 samples .*larger N needs the train split"):
        build_samples(CharTokenizer(), SampleRecipe(n=1834))


def test_the_train_split_offline_fails_at_once_saying_what_to_do(monkeypatch):
    _offline(monkeypatch)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"train split is not shipped .*ConnectionError: no network.*offline, use the "
                                           r"test split"):
        load_wikitext(split="train")
    with pytest.raises(RuntimeError, match="train split is not shipped"):
        build_samples(CharTokenizer(), SampleRecipe(n=10, split="train"))
    assert time.perf_counter() - t0 < 10


def test_the_train_split_is_read_through_datasets_when_online(monkeypatch):
    import datasets

    rows = ["", " = Valkyria Chronicles III = ", "", " " + "x" * 120 + " ", " " + "y" * 130]
    seen = {}

    def fake(path, name, split, cache_dir):
        seen.update(path=path, name=name, split=split)
        return {"text": rows}

    monkeypatch.setattr(datasets, "load_dataset", fake)
    lines = load_wikitext(split="train")
    assert seen == {"path": "wikitext", "name": "wikitext-2-raw-v1", "split": "train"}
    assert lines == ["", "= Valkyria Chronicles III =", "", "x" * 120, "y" * 130]
    s = build_samples(CharTokenizer(), SampleRecipe(n=2, split="train"))
    assert s.lines == ["x" * 120, "y" * 130]


def test_the_split_is_part_of_the_recipe_and_so_of_the_key():
    from dataclasses import replace

    from tdcourse.models import ModelSpec

    spec = ModelSpec("m", "m", None, "none", "float32", "trained", 0)
    test = store.entry_meta(spec, SampleRecipe(n=3), "d", "i")
    train = store.entry_meta(spec, SampleRecipe(n=3, split="train"), "d", "i")
    assert test["recipe"]["split"] == "test" and train["recipe"]["split"] == "train"
    assert store.cache_key(test) != store.cache_key(train)
    with pytest.raises(ValueError, match="split must be one of 'train', 'validation', 'test'"):
        check_recipe(replace(SampleRecipe(), split="dev"))


def test_an_imported_train_split_capture_is_found_offline(monkeypatch):
    """Offline the train split's text cannot be hashed: the entry is matched by its recipe."""
    from tdcourse.capture import save_activations, site_names
    from tdcourse.models import ModelSpec

    _offline(monkeypatch)
    recipe = SampleRecipe(n=3, split="train")
    spec = ModelSpec("llama-3.1-70b", "meta-llama/Llama-3.1-70B", "r", "none", "bfloat16", "trained", 0)
    meta = store.entry_meta(spec, recipe, "hash-made-online", "ids")
    save_activations(np.zeros((3, 2, 4), np.float32), site_names(1), ["a", "b", "c"], meta)
    (found,) = store.find_entries("llama-3.1-70b", recipe)
    assert found[1] == meta
    assert store.find_entries("llama-3.1-70b", SampleRecipe(n=3)) == []  # the test split's recipe: no match
