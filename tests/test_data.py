from __future__ import annotations

import hashlib

import pytest

from tdcourse.data import SampleRecipe, body_lines, build_samples, load_wikitext, local_data_file


class CharTokenizer:
    """Character-level stand-in for a HF tokenizer: one id per character, BOS ``<s>`` (id 1)."""

    bos_token = "<s>"

    def convert_tokens_to_ids(self, token):
        return 1 if token == self.bos_token else None

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [([1] if add_special_tokens else []) + [ord(c) for c in t] for t in texts]}

    def batch_decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=None):
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
    assert s.input_ids[0][0] == 1 and s.bos_token_id == 1  # the document-start token, when asked for
    assert s.input_ids[0][1:] == [ord("a")] * 9
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


class ChatBosTokenizer(CharTokenizer):
    """A tokenizer whose BOS slot holds a chat token and whose default adds it (what transformers
    4.57 does with SmolLM2's converted tokenizer): the course's rule puts nothing first."""

    bos_token = "<|im_start|>"

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [([7] if add_special_tokens else []) + [ord(c) for c in t] for t in texts]}


@pytest.mark.parametrize("add", [True, False])
def test_the_first_token_follows_the_rule_not_the_tokenizers_default(add):
    from tdcourse.data import bos_token_id

    lines = ["a" * 120, "c" * 200]
    r = SampleRecipe(n=2, min_chars=100, max_tokens=10, add_special_tokens=add)
    s = build_samples(ChatBosTokenizer(), r, lines=lines)
    assert s.input_ids == [[ord("a")] * 10, [ord("c")] * 10] and s.bos_token_id is None
    assert bos_token_id(ChatBosTokenizer()) is None and bos_token_id(CharTokenizer()) == 1
    char = build_samples(CharTokenizer(), r, lines=lines)
    assert char.input_ids[0][0] == (1 if add else ord("a"))


@pytest.mark.slow
def test_smollm2_samples_do_not_depend_on_add_bos_token():
    """With the converted SmolLM2 tokenizer the samples are the same ids whatever its
    ``add_bos_token`` setting (which makes its default encoding start with ``<|im_start|>``, as
    transformers 4.57 does by default). The first sample's first ids were checked equal under
    transformers 4.57.6 and 5.25.0 (also for a folder converted by 4.57)."""
    from transformers import AutoTokenizer

    from tdcourse.models import _converted_smollm2_dir

    folder = _converted_smollm2_dir()
    recipe = SampleRecipe(n=50)
    plain = build_samples(AutoTokenizer.from_pretrained(folder), recipe)
    with_bos = AutoTokenizer.from_pretrained(folder, add_bos_token=True)
    assert with_bos("Robert")["input_ids"][0] == 1  # the setting does change the tokenizer's default ...
    without = AutoTokenizer.from_pretrained(folder, add_bos_token=False)
    for tok in (with_bos, without):
        assert build_samples(tok, recipe).input_ids == plain.input_ids  # ... never the samples
    assert plain.bos_token_id is None
    assert plain.input_ids[0][:8] == [25268, 389, 9226, 352, 314, 354, 2321, 4771]
