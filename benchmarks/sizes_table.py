"""The sizes table of book/beyond.md, computed (not typed): bytes of a capture per model and N.

    python benchmarks/sizes_table.py --out book/_beyond_sizes.md --weights-out book/_beyond_weights.md

A capture holds, per sample, the residual stream at the last token at both sites of every
layer: ``2 * n_layers * d_model`` values, 4 bytes each in float32 and 2 in a half store
(float16 / bfloat16), plus a 128-byte header per file. The layer counts and widths are those
of the models' published ``config.json`` (``num_hidden_layers``, ``hidden_size``).
tests/test_beyond_page.py checks that the committed table is what this script prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: model -> (num_hidden_layers, hidden_size), from each model's config.json on the hub.
SHAPES = {
    "SmolLM2-135M": (30, 576),
    "Llama 3.1 8B": (32, 4096),
    "Llama 3.1 70B": (80, 8192),
    "Llama 3.1 405B": (126, 16384),
}
NS = (1000, 10_000)
#: The Llama 3.1 configs (config.json on the hub): hidden, intermediate, layers, heads, kv heads, vocab.
LLAMA_CONFIGS = {
    "Llama 3.1 8B": (4096, 14336, 32, 32, 8, 128256),
    "Llama 3.1 70B": (8192, 28672, 80, 64, 8, 128256),
    "Llama 3.1 405B": (16384, 53248, 126, 128, 8, 128256),
}


def capture_bytes(n_samples: int, n_layers: int, d_model: int, itemsize: int = 4) -> int:
    """Bytes of the cached array of a capture (values only; the .npy header adds 128)."""
    return n_samples * 2 * n_layers * d_model * itemsize


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 1000 * 2**20 else f"{b / 2**20:.0f} MiB"


def table() -> str:
    """The markdown table (one row per model; each cell: float32 store / half store)."""
    head = ("| model | sites × width | one sample | " + " | ".join(f"N = {n:,}" for n in NS) + " |")
    rule = "|" + "---|" * (3 + len(NS))
    rows = []
    for name, (layers, width) in SHAPES.items():
        one = capture_bytes(1, layers, width)
        cells = [name, f"{2 * layers} × {width:,}", f"{one / 2**20:.2f} / {one / 2**21:.2f} MiB"]
        cells += [f"{_gib(capture_bytes(n, layers, width))} / {_gib(capture_bytes(n, layers, width, 2))}" for n in NS]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows]) + "\n"


def llama_params(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int) -> int:
    """Weights of a Llama 3.1 model from its config: per layer the q, k, v, o projections
    (head width ``hidden / heads``, ``kv`` key-value heads), the three MLP matrices and two norms;
    the embedding, the untied LM head and the final norm."""
    hd = hidden // heads
    per_layer = 2 * hidden * hidden + 2 * hidden * kv * hd + 3 * hidden * inter + 2 * hidden
    return layers * per_layer + 2 * vocab * hidden + hidden


def weights_table() -> str:
    """Weights per model in bfloat16 (2 bytes) and 4-bit NF4 (~0.55 bytes, tdcourse.models.check_fits)."""
    rows = ["| model | parameters | weights in bfloat16 | in 4-bit NF4 (about) |", "|---|---|---|---|"]
    for name, cfg in LLAMA_CONFIGS.items():
        n = llama_params(*cfg)
        rows.append(f"| {name} | {n / 1e9:.2f} B | {n * 2 / 2**30:.0f} GiB | {n * 0.55 / 2**30:.0f} GiB |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--weights-out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.weights_out:
        args.weights_out.write_text(weights_table())
    text = table()
    if args.out:
        args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
