"""Samples cut shorter, read in the same forward passes: the hooks' ``also`` readings and
``load_activations(prefixes=...)`` (how the build captures the scoreboard's data axis "token 25
of 48" without forward passes of its own)."""

from __future__ import annotations

import numpy as np
import pytest

from tdcourse import hooks
from tdcourse.capture import load_activations
from tdcourse.data import SampleRecipe
from tdcourse.hooks import capture

from test_cache_roundtrip import N, _tiny_folder


def test_also_reads_the_states_of_the_samples_cut_after_that_token(tiny_llama):
    model, ids = tiny_llama
    pos = np.array([0, 4, 2, 6, 3, 1])  # inside every sample (lengths 3, 9, 5, 7, 4, 8)
    extra = np.full((len(ids), 6, 64), np.nan, np.float32)
    main = capture(model, ids, batch_size=4, progress=False, also=[(pos, extra)])
    cut = capture(model, [x[: p + 1] for x, p in zip(ids, pos)], batch_size=4, progress=False)
    np.testing.assert_allclose(extra, cut, rtol=1e-5, atol=1e-6)  # float rounding of other matrix shapes only
    np.testing.assert_array_equal(main, capture(model, ids, batch_size=4, progress=False))  # the main reading unchanged
    last = np.array([len(x) - 1 for x in ids])
    again = np.empty_like(extra)
    capture(model, ids, batch_size=4, progress=False, also=[(last, again)])
    np.testing.assert_array_equal(again, main)  # the last token read twice is the same tensor


@pytest.mark.parametrize("positions, match", [
    (np.array([0, 1, 2, 3, 4]), "one whole number per sample"),
    (np.array([0.0, 1, 2, 3, 4, 5]), "one whole number per sample"),
    (np.array([3, 1, 2, 3, 3, 1]), "position 3 of sample 0 lies outside it"),
    (np.array([0, 1, 2, 3, -1, 1]), "position -1 of sample 4"),
])
def test_also_positions_outside_a_sample_are_refused_before_any_forward_pass(tiny_llama, positions, match,
                                                                               monkeypatch):
    model, ids = tiny_llama
    monkeypatch.setattr(model.model, "forward", lambda *a, **k: pytest.fail("ran a forward pass"))
    with pytest.raises(ValueError, match=match):
        capture(model, ids, progress=False, also=[(positions, np.empty((6, 6, 64), np.float32))])


@pytest.fixture
def folder(tmp_path):
    return _tiny_folder(tmp_path / "models" / "tiny-llama")


def test_a_prefix_recipe_is_kept_in_its_own_entry_and_equals_its_own_capture(folder, monkeypatch, capsys):
    short = SampleRecipe(max_tokens=25)
    main = load_activations(folder, n=N, prefixes=[short])
    assert "Read 12 samples of at most 25 tokens in the same forward passes" in capsys.readouterr().out
    assert main.acts.shape[0] == N and main.info["capture"]["seconds"] >= 0  # the record says how long it took
    calls = []
    real = hooks.capture
    monkeypatch.setattr("tdcourse.capture.capture", lambda *a, **k: calls.append(1) or real(*a, **k))
    kept = load_activations(folder, n=N, recipe=short, progress=False)
    assert calls == []  # read from its entry: no forward pass
    assert "read_within" in kept.info["capture"] and kept.meta["recipe"]["max_tokens"] == 25
    assert kept.path != main.path and len(kept.texts[0]) < len(main.texts[0])
    own = load_activations(folder, n=N, recipe=short, rebuild=True, progress=False)
    assert calls == [1] and own.path == kept.path  # the same key: the same samples and model
    np.testing.assert_allclose(own.acts, kept.acts, rtol=1e-5, atol=1e-6)


def test_a_cached_prefix_is_not_read_again(folder, monkeypatch):
    short = SampleRecipe(max_tokens=25)
    first = load_activations(folder, n=N, recipe=short, progress=False)
    before = first.path.stat().st_mtime_ns
    load_activations(folder, n=N, prefixes=[short], progress=False)
    assert first.path.stat().st_mtime_ns == before
    assert "read_within" not in load_activations(folder, n=N, recipe=short, progress=False).info["capture"]


@pytest.mark.parametrize("prefixes, match", [
    ([SampleRecipe(max_tokens=48)], "with a smaller max_tokens"),
    ([SampleRecipe(max_tokens=60)], "with a smaller max_tokens"),
    ([SampleRecipe(max_tokens=25, max_chars=300)], "with a smaller max_tokens"),
    (SampleRecipe(max_tokens=25), "must be a list of SampleRecipe"),
    (["token 25"], "must be a list of SampleRecipe"),
])
def test_prefixes_that_are_not_the_samples_cut_shorter_are_refused(folder, prefixes, match):
    with pytest.raises(ValueError, match=match):
        load_activations(folder, n=N, prefixes=prefixes, progress=False)
