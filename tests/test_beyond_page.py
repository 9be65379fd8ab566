"""The page "Beyond one GPU" (book/beyond.md): its tables come from code, its links resolve,
and it sits in the table of contents after the GPU page, which links to it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "beyond.md"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sizes_script():
    return _script("sizes_table")


def test_the_included_tables_are_what_the_scripts_compute_now():
    """Every number of the page's tables and measured lines comes from a script run on the
    configs and the committed logs: the included files are exactly what they print now."""
    sizes = _sizes_script()
    assert (ROOT / "book" / "_beyond_sizes.md").read_text() == sizes.table()
    assert (ROOT / "book" / "_beyond_weights.md").read_text() == sizes.weights_table()
    assert (ROOT / "book" / "_beyond_costs.md").read_text() == _script("chapter_costs").table()
    assert (ROOT / "book" / "_beyond_measured.md").read_text() == _script("beyond_measured").render()
    text = PAGE.read_text()
    for inc in ("_beyond_sizes.md", "_beyond_weights.md", "_beyond_costs.md", "_beyond_measured.md"):
        assert f"```{{include}} {inc}" in text, inc


def test_the_sizes_are_the_issues_and_the_parameters_the_published_ones():
    mod = _sizes_script()
    # issue 22: 8B 1.0 GiB, 70B 4.9 GiB, 405B 15.4 GiB per 1000 samples in float32
    for name, want in (("Llama 3.1 8B", 0.98), ("Llama 3.1 70B", 4.88), ("Llama 3.1 405B", 15.38)):
        layers, width = mod.SHAPES[name]
        assert round(mod.capture_bytes(1000, layers, width) / 2**30, 2) == want
    counts = {name: mod.llama_params(*cfg) for name, cfg in mod.LLAMA_CONFIGS.items()}
    assert counts == {"Llama 3.1 8B": 8_030_261_248, "Llama 3.1 70B": 70_553_706_496,
                      "Llama 3.1 405B": 405_853_388_800}  # the hub's safetensors totals


def test_the_model_aliases_are_the_base_models_ndif_hosts():
    from tdcourse.models import ALIASES

    assert ALIASES["llama-3.1-70b"] == "meta-llama/Llama-3.1-70B"
    assert ALIASES["llama-3.1-405b"] == "meta-llama/Llama-3.1-405B"
    assert ALIASES["llama-3.1-8b"] == "meta-llama/Llama-3.1-8B"  # base, like the two above


def test_links_resolve_and_the_page_is_in_the_toc_after_gpu():
    text = PAGE.read_text()
    for target in re.findall(r"\{doc\}`([^`<]+)`", text):
        path = (PAGE.parent / target).resolve()
        assert any(path.with_suffix(s).exists() for s in (".md", ".ipynb")), target
    labels = set(re.findall(r"^\(([\w-]+)\)=$", text, flags=re.M))
    for target in re.findall(r"\{ref\}`([^`<]+)`", text):
        assert target in labels, target
    toc = (ROOT / "_toc.yml").read_text()
    assert "- file: book/gpu\n      - file: book/beyond\n" in toc
    assert "{doc}`beyond`" in (ROOT / "book" / "gpu.md").read_text()
    assert "MEASURED-" not in text  # every measured section was filled from the logs
