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


def test_local_lines_are_those_datasets_reads():
    # SHA-256 of the 2,891 stripped lines joined with newlines, as datasets' "text" builder gave them
    lines = load_wikitext()
    assert len(lines) == 2891
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == (
        "97c24cf733fd99a4f2c0223836d4cbda1ddb6b9b055c8ebcc3cdfb9b38937b61")


def test_read_only_home_and_unusable_hf_home(tmp_path):
    """No Hugging Face cache is needed to read the shipped text: HF_HOME below a file, and a
    home that cannot be written (/proc/self refuses new files even to root)."""
    import os
    import subprocess
    import sys

    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_"))}
    env.update(HF_HOME=str(blocker / "below"), HOME="/proc/self", TDCOURSE_CACHE=str(tmp_path / "c"))
    code = ("from tdcourse.data import load_wikitext, body_lines; "
            "print(len(body_lines(load_wikitext())))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1833"


def test_hub_that_never_answers_times_out_and_falls_back(monkeypatch, capsys):
    import time

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: time.sleep(30))
    t0 = time.perf_counter()
    lines = load_wikitext(source="hub", timeout=0.3)
    assert time.perf_counter() - t0 < 10
    assert len(lines) == 2891
    said = capsys.readouterr().out
    assert "did not answer within 0.3 s" in said and "HF_HUB_OFFLINE=1" in said
    with pytest.raises(RuntimeError, match="split 'train'.*HF_HUB_OFFLINE"):
        load_wikitext(source="hub", split="train", timeout=0.3)


@pytest.mark.parametrize("field, value", [("n", 1.5), ("n", True), ("n", "12"), ("n", 0), ("max_tokens", 0),
                                          ("max_tokens", 2.0), ("min_chars", -1)])
def test_recipe_fields_are_validated(field, value):
    from dataclasses import replace

    with pytest.raises(ValueError, match=rf"^{field} must be"):
        build_samples(CharTokenizer(), replace(SampleRecipe(n=2), **{field: value}), lines=["a" * 200] * 3)
