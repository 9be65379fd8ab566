from __future__ import annotations

import hashlib

import pytest

from tdcourse.data import SampleRecipe, body_lines, build_samples, load_wikitext, local_data_file


class CharTokenizer:
    """Character-level stand-in for a HF tokenizer: one id per character."""

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [([1] if add_special_tokens else []) + [ord(c) for c in t] for t in texts]}

    def batch_decode(self, ids, skip_special_tokens=False):
        return ["".join(chr(i) for i in x if i != 1) for x in ids]


def test_shipped_file_is_the_documented_split():
    path = local_data_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c"
    assert (path.parent / "NOTICE.md").exists()


def test_load_wikitext_local_counts():
    lines = load_wikitext()
    body = body_lines(lines, min_chars=100)
    assert len(body_lines(lines, min_chars=1)) == 2183
    assert len(body) == 1833
    assert not any(t.startswith("= ") for t in body)


def test_build_samples_truncates_and_is_deterministic():
    lines = ["= Title =", "x" * 50, "a" * 120, "b" * 30, "c" * 200]
    r = SampleRecipe(n=2, min_chars=100, max_tokens=10, add_special_tokens=True)
    s = build_samples(CharTokenizer(), r, lines=lines)
    assert s.lines == ["a" * 120, "c" * 200]
    assert [len(x) for x in s.input_ids] == [10, 10]
    assert s.input_ids[0][0] == 1  # the special token is kept when asked for
    assert s.texts[1] == "c" * 9
    assert build_samples(CharTokenizer(), r, lines=lines).data_sha256 == s.data_sha256


def test_build_samples_too_many_says_how_many():
    with pytest.raises(ValueError, match="at most 1833 samples"):
        build_samples(CharTokenizer(), SampleRecipe(n=5000))


def test_bad_source():
    with pytest.raises(ValueError, match="source"):
        load_wikitext(source="internet")
