"""The capture engine: plain PyTorch forward pre-hooks that read the residual stream.

Sites (the paper's two per layer; TransformerLens names in code, the paper's in prose):

=====================  ===========  ==============================================================
site name              paper        the point in a HF Llama decoder layer ``l``
=====================  ===========  ==============================================================
``resid_pre.{l}``      pre-Attn l   input of ``model.layers[l]`` (before ``input_layernorm``)
``resid_mid.{l}``      pre-MLP l    input of ``layers[l].post_attention_layernorm``, i.e.
                                    ``resid_pre.{l}`` + the attention block's output
=====================  ===========  ==============================================================

That is Llama's (and Mistral's, Qwen's); families that normalise block outputs put
``resid_mid`` elsewhere (OLMo-2: input of ``mlp``; Gemma-2/3: input of
``pre_feedforward_layernorm``): :data:`tdcourse.models.RESIDUAL_SITES` says where, and
:func:`tdcourse.models.check_residual_sites` checks it on the first batch of every capture.

No wrapper library: the hooks see the raw residual tensors the model computes. The array
they fill, its site order and its checks are :mod:`tdcourse.capture`'s; the cache that keeps
it is :mod:`tdcourse.store`'s. This module imports neither.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np

from .data import check_int
from .models import check_residual_sites, decoder_layers, residual_sites, text_config

__all__ = ["residual_hooks", "capture", "check_inputs", "check_token_ids", "input_device"]


def _layer_input(args: tuple, kwargs: dict):
    return args[0] if args else kwargs["hidden_states"]


@contextlib.contextmanager
def residual_hooks(model, on_state) -> Iterator[None]:
    """Call ``on_state(site_position, hidden)`` at every site during a forward pass.

    ``hidden`` is the raw residual tensor of shape ``(batch, seq, d_model)`` at that site;
    ``site_position`` indexes :func:`tdcourse.capture.site_names`. Hooks are removed on exit, also on error.
    """
    handles = []
    try:
        # resid_mid's module depends on the family (OLMo-2, Gemma-2/3): models.RESIDUAL_SITES
        for l, (layer, mid) in enumerate(residual_sites(model)):
            for pos, module in ((2 * l, layer), (2 * l + 1, mid)):
                def hook(mod, args, kwargs, _pos=pos):
                    on_state(_pos, _layer_input(args, kwargs))
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _batches(input_ids: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
    """Sample indices in order, in contiguous batches of ``batch_size``."""
    n = len(input_ids)
    return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _pad(input_ids: Sequence[Sequence[int]], idx: np.ndarray, pad_id: int, device):
    import torch

    lengths = [len(input_ids[i]) for i in idx]
    width = max(lengths)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        ids[row, : lengths[row]] = torch.tensor(input_ids[i])
        mask[row, : lengths[row]] = 1
    return ids.to(device), mask.to(device), torch.tensor(lengths, device=device) - 1


def _pad_id(model, pad_token_id: int | None) -> int:
    """A token id to fill padded slots with: the given one, else the config's pad or eos id,
    and 0 when that id is outside the embedding table (a pad token added to a tokenizer whose
    model was not resized). Padded slots come after each sample's last real token and are
    masked, so their value is never read: any id inside the vocabulary gives the same states."""
    vocab = None
    emb = getattr(model, "get_input_embeddings", lambda: None)()
    if emb is not None and getattr(emb, "num_embeddings", None):
        vocab = int(emb.num_embeddings)
    configs = (text_config(model), model.config)  # a multimodal wrapper keeps its ids in either
    candidates = [pad_token_id, *(getattr(c, "pad_token_id", None) for c in configs),
                  *(getattr(c, "eos_token_id", None) for c in configs)]
    for c in candidates:
        c = c[0] if isinstance(c, (list, tuple)) and c else c
        if isinstance(c, int) and not isinstance(c, bool) and c >= 0 and (vocab is None or c < vocab):
            return c
    return 0


def _vocab_size(model) -> int | None:
    emb = getattr(model, "get_input_embeddings", lambda: None)()
    rows = getattr(emb, "num_embeddings", None)
    return int(rows) if rows else None


def check_token_ids(input_ids: Sequence[Sequence[int]], vocab_size: int | None,
                    where: str = "the model's vocabulary") -> None:
    """Refuse token ids the model has no embedding for, before any forward pass.

    Parameters
    ----------
    input_ids : sequence of n_samples token-id lists
    vocab_size : int or None
        Rows of the input embedding (None: not known, nothing checked).
    where : str
        What the ids must fit, for the message.

    Raises
    ------
    ValueError
        A sample holds an id below 0 or at least ``vocab_size`` (torch would end in an
        ``IndexError`` deep inside the embedding): the message names the sample, the id and
        the likely cause, a tokenizer that does not belong to the model.
    """
    if not vocab_size:
        return
    for i, ids in enumerate(input_ids):
        arr = np.asarray(ids)
        if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
            bad = int(arr[(arr < 0) | (arr >= vocab_size)][0])
            raise ValueError(
                f"Sample {i} holds token id {bad}, outside {where} (ids 0 to {vocab_size - 1}): the tokenizer does "
                "not belong to this model. Save the model's own tokenizer beside its weights "
                "(tokenizer.save_pretrained(folder)), or resize the embeddings "
                "(model.resize_token_embeddings(len(tokenizer))) before saving the model.")


def _hook_device(module):
    """The execution device an accelerate hook on ``module`` names, or None."""
    hook = getattr(module, "_hf_hook", None)
    for h in [hook, *getattr(hook, "hooks", [])]:
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return dev
    return None


def input_device(model):
    """Where the token ids of a forward pass go: the device the input embedding runs on.

    Parameters
    ----------
    model : transformers causal LM, possibly dispatched by accelerate (``device_map``)

    Returns
    -------
    torch.device
        The execution device of the embedding's accelerate hook when it has one (its weights
        offloaded to the CPU or disk sit on the ``meta`` device), else the device of the
        embedding's weights, else of the first parameter not on ``meta``; the CPU otherwise.
    """
    import torch

    emb = getattr(model, "get_input_embeddings", lambda: None)()
    for module in (emb, model):
        dev = _hook_device(module) if module is not None else None
        if dev is not None:
            return torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)
    for module in (emb, model):
        for p in module.parameters() if module is not None else ():
            if p.device.type != "meta":
                return p.device
    return torch.device("cpu")


class _Collector:
    """Where a capture's batches go: rows kept on the device, copied into ``out`` in order.

    On a GPU, results stay on the device and are copied in blocks of about 256 MiB: a copy per
    batch would make the CPU wait for the GPU instead of queueing the next batch. On the CPU
    each batch is copied at once (there is nothing to overlap). ``out`` is anything that takes
    ``out[a:b] = block`` in sample order: a float32 ndarray, or a cache entry being written
    (:class:`tdcourse.store.EntryWriter`), so a capture never holds more than the pending
    blocks in memory.
    """

    def __init__(self, out, device, flush_bytes: int = 256 * 2**20):
        import torch

        self.out, self.device = out, device
        self.flush_bytes = flush_bytes if device.type == "cuda" else 0
        self.pending: list[tuple[np.ndarray, Any]] = []
        self.pending_bytes = 0
        self.finite = torch.ones((), dtype=torch.bool, device=device)

    def add(self, idx: np.ndarray, buf) -> None:
        """Batch ``buf`` of shape (len(idx), n_sites, d_model), float32, holds samples ``idx`` (contiguous)."""
        import torch

        self.finite &= torch.isfinite(buf).all().to(self.finite.device)
        self.pending.append((idx, buf))
        self.pending_bytes += buf.numel() * 4
        if self.pending_bytes >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        import torch

        for idx, buf in self.pending:
            a, b = int(idx[0]), int(idx[-1]) + 1
            if isinstance(self.out, np.ndarray):
                torch.from_numpy(self.out[a:b]).copy_(buf)
            else:
                self.out[a:b] = buf.detach().to("cpu", torch.float32).numpy()
        self.pending.clear()
        self.pending_bytes = 0

    def check_finite(self) -> None:
        if not bool(self.finite):
            raise FloatingPointError("The captured activations hold NaN or inf: try float32 or bfloat16 instead of "
                                     "float16.")


def capture(
    model,
    input_ids: Sequence[Sequence[int]],
    batch_size: int = 32,
    pad_token_id: int | None = None,
    progress: bool = True,
    out=None,
    also: Sequence[tuple[Sequence[int], Any]] = (),
):
    """Residual states at the last real token of each sample, at every site.

    Parameters
    ----------
    model : transformers Llama-style causal LM
    input_ids : sequence of n_samples token-id lists (unpadded, any lengths)
    batch_size : int
        Samples per forward pass (right-padded; batches group similar lengths).
    pad_token_id : int or None
        Defaults to the model config's pad or eos id.
    progress : bool
        Show a tqdm progress bar.
    out : ndarray, tdcourse.store.EntryWriter or None
        Where the rows go, in sample order (``out[a:b] = block``): None allocates a float32
        array of shape ``(n_samples, 2 * n_layers, d_model)``; a cache entry being written
        keeps the capture's memory to the pending batches, whatever ``n_samples``.
    also : sequence of (positions, out) pairs
        Further readings in the same forward passes: sample ``i`` is also read at its token
        index ``positions[i]`` (0 ≤ ``positions[i]`` < its length), every site, into ``out``
        (as ``out`` above; shape ``(n_samples, 2 * n_layers, d_model)``). Under causal attention
        a token's state does not depend on the tokens after it, so this is the capture of the
        samples cut after that token, up to float rounding (the batch's matrices have other
        shapes), without their forward passes.

    Returns
    -------
    ndarray of shape (n_samples, 2 * n_layers, d_model), float32, or ``out``
        Sites ordered as :func:`tdcourse.capture.site_names`. Only the decoder
        (``model.model``) runs: the LM head is not computed.

    Raises
    ------
    ValueError
        An empty ``input_ids`` or sample, a bad ``batch_size``, a token id outside the
        model's vocabulary (:func:`check_token_ids`), or ``also`` positions that are not one
        whole number per sample inside it.
    tdcourse.models.UnsupportedModelError
        A family whose residual sites the course does not know, or whose self-check fails
        (:func:`tdcourse.models.check_residual_sites`, run on the first samples).
    FloatingPointError
        A captured value is NaN or inf (raised after the last batch; a cache entry being
        written is then discarded by its writer).

    Notes
    -----
    A model split over several devices (``device_map="auto"``, accelerate's CPU / disk
    offload) works: the token ids go where the embedding runs (:func:`input_device`), each
    hook gathers its rows on the device of the hidden state it sees, and the rows are collected
    on the input device, then copied to the CPU (:class:`_Collector`).
    """
    import torch
    from tqdm.auto import tqdm

    batch_size = check_int(batch_size, "batch_size")
    check_inputs(input_ids)
    check_token_ids(input_ids, _vocab_size(model))
    layers = decoder_layers(model)
    n_sites = 2 * len(layers)
    d_model = int(text_config(model).hidden_size)  # a multimodal wrapper's (Gemma-3) text part
    device = input_device(model)
    pad_token_id = _pad_id(model, pad_token_id)
    extra = [_also_positions(p, input_ids, k) for k, (p, _o) in enumerate(also)]
    if out is None:
        out = np.empty((len(input_ids), n_sites, d_model), dtype=np.float32)
    base = getattr(model, "model", model)
    state: dict[str, Any] = {}

    def on_state(pos, hidden):
        # Layers may sit on several devices: gather on the hidden state's own device with the
        # indices moved there (once per batch and device), then collect on the input device.
        where = state["index"].get(hidden.device)
        if where is None:
            rows = state["rows"].to(hidden.device)
            where = state["index"][hidden.device] = [(rows, p.to(hidden.device)) for p in state["positions"]]
        for (rows, p), buf in zip(where, state["bufs"]):
            buf[:, pos] = hidden[rows, p].to(device)

    sinks = [_Collector(o, device) for o in [out, *(o for _p, o in also)]]
    check_residual_sites(model, *_pad(input_ids, np.arange(min(4, len(input_ids))), pad_token_id, device)[:2])
    with torch.inference_mode(), residual_hooks(model, on_state):
        for idx in tqdm(_batches(input_ids, batch_size), desc="capture", unit="batch", disable=not progress):
            ids, mask, last = _pad(input_ids, idx, pad_token_id, device)
            state["rows"] = torch.arange(len(idx), device=device)
            state["positions"] = [last, *(torch.as_tensor(p[idx], device=device) for p in extra)]
            state["index"] = {}
            state["bufs"] = [torch.empty((len(idx), n_sites, d_model), dtype=torch.float32, device=device)
                             for _ in sinks]
            base(input_ids=ids, attention_mask=mask, use_cache=False)
            for sink, buf in zip(sinks, state["bufs"]):
                sink.add(idx, buf)
        for sink in sinks:
            sink.flush()
    for sink in sinks:
        sink.check_finite()
    return out


def _also_positions(positions, input_ids: Sequence[Sequence[int]], k: int) -> np.ndarray:
    """``also[k]``'s positions as an int64 array, one per sample, each inside its sample (``ValueError``)."""
    p = np.asarray(positions)
    if p.shape != (len(input_ids),) or not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"also[{k}]: positions must be one whole number per sample ({len(input_ids)}), got an "
                         f"array of shape {p.shape} and dtype {p.dtype}")
    lengths = np.array([len(x) for x in input_ids])
    bad = np.flatnonzero((p < 0) | (p >= lengths))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"also[{k}]: position {int(p[i])} of sample {i} lies outside it (its {lengths[i]} tokens "
                         f"are 0 … {lengths[i] - 1}); {bad.size} sample(s) so")
    return p.astype(np.int64)


def check_inputs(input_ids: Sequence[Sequence[int]]) -> None:
    """Refuse an empty list of samples or an empty sample (``ValueError``), before any model runs."""
    if len(input_ids) == 0:
        raise ValueError("input_ids is empty")
    if any(len(x) == 0 for x in input_ids):
        raise ValueError("every sample needs at least one token")
