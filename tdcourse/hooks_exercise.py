"""The check of the residual-stream exercise: a learner's own forward pre-hooks against the library's.

The first chapter lets the learner write what every later chapter stands on: two forward
pre-hooks per decoder layer that read the residual stream at the last real token of each sample,

- ``resid_pre.l`` (the paper's pre-Attn ``l``): the input of ``model.model.layers[l]``;
- ``resid_mid.l`` (pre-MLP ``l``): the input of the family's pre-MLP module,
  :func:`tdcourse.models.residual_sites` (``post_attention_layernorm`` for Llama and SmolLM2),

and return them as the course's array, ``(n_samples, 2 * n_layers, d_model)``, sites ordered
``resid_pre.0, resid_mid.0, resid_pre.1, …``. :func:`check_residual_hooks` runs the learner's
function on a few real samples and compares it with the capture engine's own hooks
(:func:`tdcourse.hooks.residual_hooks`, the hooks :func:`tdcourse.hooks.capture` fills the cache
with); where it differs it says which usual mistake the values match:
a forward hook instead of a pre-hook (the layer's *output* is the next layer's input: off by one
layer), a normalised state (the output of ``input_layernorm`` / ``post_attention_layernorm``,
i.e. the input of ``self_attn`` / ``mlp``), the attention block's write instead of the stream,
the first token, a padded position, the sites in another order, hooks left on the model.

This module reads the model only through :mod:`tdcourse.hooks` and :mod:`tdcourse.models`; it
changes neither.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .exercises import NOT_WRITTEN, report, unwritten
from .hooks import input_device, residual_hooks
from .models import residual_sites, text_config
from .verdicts import number

__all__ = ["check_residual_hooks", "relative_gap"]

#: Relative gap (of a site's largest value) within which two reads of the same site agree:
#: float32 batched vs one sample at a time differ by ~1e-6; one bfloat16 rounding by ~4e-3. The
#: mistakes the check names miss by more at most sites (on SmolLM2's first 4 samples, median over
#: sites: 0.07 for resid_pre read as resid_mid, 0.16 off by one layer, ~1 for a normed state or
#: the attention write, ~60 for the first token; smallest at any site 0.013).
RTOL_FLOAT32 = 1e-4
RTOL_16BIT = 2e-2


def relative_gap(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """How far two reads of the residual stream are apart, per sample and site.

    Parameters
    ----------
    got, want : ndarray of shape (n_samples, n_sites, d_model)

    Returns
    -------
    ndarray of shape (n_samples, n_sites)
        ``max_u |got - want| / max_u |want|`` (the largest unit of ``want`` at that site sets the
        scale, so massive activations do not hide an error elsewhere: any unit off by more
        than that fraction of the site's largest value counts). 0 where both are 0; ``inf``
        where ``want`` is 0 and ``got`` is not; NaN in either gives NaN.

    Raises
    ------
    ValueError
        The shapes differ or are not 3-D.
    """
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.ndim != 3 or got.shape != want.shape:
        raise ValueError(f"got and want must be (n_samples, n_sites, d_model) arrays of one shape, "
                         f"got {got.shape} and {want.shape}")
    diff = np.abs(got - want).max(axis=2)
    scale = np.abs(want).max(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), np.where(diff > 0, np.inf, 0.0))
    return np.where(np.isnan(got).any(2) | np.isnan(want).any(2), np.nan, gap)


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _output(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _references(model, input_ids: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                extra: bool = True) -> dict[str, np.ndarray]:
    """One sample at a time, through the engine's hooks (:func:`tdcourse.hooks.residual_hooks`):
    the two sites and the values a wrong hook would read, at the given positions of each sample.

    Returns ``{name: ndarray (n_samples, n_positions, n_layers, d_model)}`` for ``pre``,
    ``mid`` (the sites), ``layer_out`` (the layer's output), ``mid_out`` (the pre-MLP module's
    output) and, where the layer has an ``input_layernorm``, ``pre_normed`` (its output); with
    ``extra=False`` the two sites only.
    """
    import torch

    sites = residual_sites(model)
    n_layers = len(sites)
    names = ("pre", "mid", "layer_out", "mid_out", "pre_normed")
    out: dict[str, list[np.ndarray]] = {k: [] for k in names}
    buf: dict[str, list[Any]] = {}
    at: dict[str, Any] = {}

    def take(hidden):
        return hidden[0, at["positions"].to(hidden.device)].float().cpu().numpy()

    def keep(name, l):
        def hook(mod, args, result):
            buf[name][l] = take(_output(result))
        return hook

    def on_state(pos, hidden):
        buf["mid" if pos % 2 else "pre"][pos // 2] = take(hidden)

    handles = []
    try:
        for l, (layer, mid) in enumerate(sites if extra else ()):
            handles.append(layer.register_forward_hook(keep("layer_out", l)))
            handles.append(mid.register_forward_hook(keep("mid_out", l)))
            norm = getattr(layer, "input_layernorm", None)  # pre-norm families; absent on OLMo-2
            if norm is not None:
                handles.append(norm.register_forward_hook(keep("pre_normed", l)))
        device = input_device(model)
        base = getattr(model, "model", model)
        with torch.inference_mode(), residual_hooks(model, on_state):
            for ids, pos in zip(input_ids, positions):
                at["positions"] = torch.tensor(list(pos))
                for k in names:
                    buf[k] = [None] * n_layers
                base(input_ids=torch.tensor([list(ids)], device=device), use_cache=False)
                for k in names:
                    if all(v is not None for v in buf[k]):
                        out[k].append(np.stack(buf[k], axis=1).astype(np.float64))
    finally:
        for h in handles:
            h.remove()
    return {k: np.stack(v) for k, v in out.items() if len(v) == len(input_ids)}


def _hook_keys(model) -> dict[int, tuple[Any, set, set]]:
    return {id(m): (m, set(m._forward_pre_hooks), set(m._forward_hooks)) for m in model.modules()}


def _remove_new_hooks(model, before) -> int:
    """Remove the hooks a learner's function left on the model; return how many there were."""
    left = 0
    for key, (module, pre, post) in _hook_keys(model).items():
        old_pre, old_post = (before[key][1], before[key][2]) if key in before else (set(), set())
        for hid in pre - old_pre:
            module._forward_pre_hooks.pop(hid, None)
            getattr(module, "_forward_pre_hooks_with_kwargs", {}).pop(hid, None)
            left += 1
        for hid in post - old_post:
            module._forward_hooks.pop(hid, None)
            for extra in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called"):
                getattr(module, extra, {}).pop(hid, None)
            left += 1
    return left


def _call(fn, model, ids, shape) -> tuple[np.ndarray | None, str, int]:
    """Run the learner's function; (values or None, why not, hooks it left on the model)."""
    before = _hook_keys(model)
    try:
        value = fn(model, [list(x) for x in ids])
        got = _numpy(value)
    except Exception as err:  # a learner's bug is reported, not raised
        left = _remove_new_hooks(model, before)
        return None, NOT_WRITTEN if unwritten(err) else f"your function raised {type(err).__name__}: {err}", left
    left = _remove_new_hooks(model, before)
    if unwritten(value):  # a template's None or ...
        return None, NOT_WRITTEN, left
    if got.shape != shape:
        return None, (f"it returned shape {got.shape}, expected {shape} = (n_samples, 2 * n_layers, d_model): "
                      "one row per sample, two sites per layer, the residual vector of each"), left
    return got, "", left


def _explain(got: np.ndarray, candidates: list[tuple[np.ndarray | None, str]], rtol: float) -> str:
    """The message of the first candidate the learner's values match at every sample and layer."""
    for values, message in candidates:
        if values is not None and values.shape == got.shape and np.all(relative_gap(got, values) <= rtol):
            return message
    return ""


def _site_list(bad: np.ndarray, kind: str) -> str:
    layers = np.flatnonzero(bad.any(0))
    shown = ", ".join(f"{kind}.{l}" for l in layers[:4]) + (", …" if len(layers) > 4 else "")
    return f"{len(layers)} of {bad.shape[1]} layers differ ({shown})"


def _padding_hint(bad: np.ndarray, lengths: Sequence[int]) -> str:
    """The padded-position message when exactly the shorter samples are wrong (``bad``: one bool
    per sample), else ''."""
    longest = np.asarray(lengths) == max(lengths)
    if bad.any() and not bad[longest].any():
        return (f"the {int(bad.sum())} shorter samples differ, the longest do not: you read a padded "
                "position. In a right-padded batch, index each sample at its own last real token "
                "(length - 1), or run one sample at a time")
    return ""


def check_residual_hooks(fn: Callable, model, input_ids: Sequence[Sequence[int]], n_samples: int = 4,
                         rtol: float | None = None, cached: np.ndarray | None = None) -> bool:
    """Check a learner's residual-stream reader against the capture engine; print what passed.

    ``fn(model, input_ids)`` must return the residual stream at the last real token of each
    sample, at both sites of every decoder layer: ``resid_pre.l``, the input of
    ``model.model.layers[l]``, and ``resid_mid.l``, the input of the layer's pre-MLP module
    (:func:`tdcourse.models.residual_sites`). The check runs it twice: on the first
    ``n_samples`` samples as given, and on the same samples cut to different lengths, a quarter
    of each and less (so that a batch of them needs padding), and compares each with the
    engine's hooks (:func:`tdcourse.hooks.residual_hooks`, run one sample at a time) or, for the
    full samples, with ``cached`` when the values equal it.
    Where the values differ it names the mistake they match: a forward hook instead of a
    pre-hook (off by one layer), a normalised state (the output of ``input_layernorm`` or
    ``post_attention_layernorm``), the attention block's write instead of the stream, the
    first token, a padded position, the sites in another order. Hooks the function leaves on
    the model are reported and removed.

    Parameters
    ----------
    fn : callable
        ``fn(model, input_ids) -> array of shape (n_samples, 2 * n_layers, d_model)``: sites
        ordered ``resid_pre.0, resid_mid.0, resid_pre.1, …``; ``input_ids`` a list of
        token-id lists of any lengths (unpadded). A numpy array or a torch tensor.
    model : transformers causal LM of a family in :data:`tdcourse.models.RESIDUAL_SITES`
    input_ids : sequence of token-id lists
        Real samples (e.g. the course's samples, ``tdcourse.data.build_samples``); the first
        ``n_samples`` are used.
    n_samples : int, default 4
        At least 2 (the cut copies need two lengths). ``fn`` runs on the samples and on their
        cut copies; the engine on the cut copies, and on the full samples only where ``fn``'s
        values differ from ``cached`` (or without it): for a right answer with ``cached``, the
        cost of about 1.3 forward passes of the samples (one, and two of their cut copies).
    rtol : float or None
        Largest relative gap (:func:`relative_gap`) that counts as equal. None: 1e-4 when the
        residual stream is float32 or float64, 2e-2 when it is 16-bit.
    cached : ndarray of shape (n_samples, 2 * n_layers, d_model), optional
        The cached capture of the same samples (``runs[0].acts[:n_samples]``): one more case
        compares the learner's values with it and prints the largest gap. Where the model's own
        states differ from it too (a capture of another model or precision), the case says so
        instead of blaming the function.

    Returns
    -------
    bool
        Whether every case passed (one ✓ / ✗ line each is printed, with the likely mistake).

    Raises
    ------
    ValueError
        Fewer than 2 samples, or a sample shorter than 2 tokens (the check itself cannot run;
        a bug in ``fn`` is reported, never raised).
    """
    ids = [[int(t) for t in x] for x in list(input_ids)[: int(n_samples)]]
    if len(ids) < 2:
        raise ValueError(f"check_residual_hooks needs at least 2 samples, got {len(ids)}: pass a few of the "
                         "course's samples (tdcourse.data.build_samples(tok, recipe).input_ids)")
    if min(len(x) for x in ids) < 2:
        raise ValueError("every sample needs at least 2 tokens (a first token that is also the last one "
                         "cannot tell the two apart)")
    k = len(ids)
    # the same samples cut short, to k different lengths (a quarter of each and less): a padded
    # batch of them has padding, and they cost a fraction of the full samples
    cut = [x[: -(-len(x) * (k - i) // (4 * k))] for i, x in enumerate(ids)]  # ceil: at least 1 token
    sites = residual_sites(model)
    n_layers, d = len(sites), int(text_config(model).hidden_size)
    shape = (k, 2 * n_layers, d)
    mid_attr = next((name for name, m in sites[0][0].named_children() if m is sites[0][1]), "its pre-MLP module")
    if rtol is None:
        import torch

        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        rtol = RTOL_FLOAT32 if dtype in (torch.float32, torch.float64) else RTOL_16BIT

    def interleave(pre_, mid_):
        return np.stack([pre_, mid_], axis=2).reshape(len(pre_), 2 * n_layers, d)

    lengths = sorted({len(x) for x in ids})
    span = f"{lengths[0]}" if len(lengths) == 1 else f"{lengths[0]} to {lengths[-1]}"
    shape_desc = f"returns an array of shape (n_samples, 2 * n_layers, d_model) = {shape}"
    pre_desc = f"resid_pre.l = the input of model.model.layers[l], at the last token ({k} samples of {span} tokens)"
    mid_desc = f"resid_mid.l = the input of layers[l].{mid_attr}, at the last token"
    cut_desc = (f"the same samples cut to {', '.join(str(len(x)) for x in cut)} tokens: each read at its own "
                "last real token")

    if cached is not None:
        cached = _numpy(cached)[:k]
    # The references come from the engine's hooks, one sample at a time, and only where needed:
    # learner's values equal to the cached capture (the library's) need no other reference for the
    # full samples; otherwise the engine's states and the values the usual mistakes read are taken
    # to name the mistake. Each is computed after the learner's function ran and its leftover
    # hooks were removed, so they cannot touch them.
    got, why, left = _call(fn, model, ids, shape)
    if why == NOT_WRITTEN and not left:  # a template: one line says it is not written yet
        return report([(shape_desc, False, why)], width=68)
    cases = [(shape_desc, got is not None, why)]
    if got is None:
        cases += [(desc, False, "not checked (see above)") for desc in (pre_desc, mid_desc, cut_desc)]
    else:
        matches_cache = (cached is not None and cached.shape == shape
                         and bool(np.all(relative_gap(got, cached) <= rtol)))
        if matches_cache:
            want, ref = cached, None
        else:
            ref = _references(model, ids, [(len(x) - 1, 0) for x in ids])
            want = interleave(ref["pre"][:, 0], ref["mid"][:, 0])
        gap = relative_gap(got, want)
        g_pre, g_mid = gap[:, 0::2], gap[:, 1::2]
        ok_pre, ok_mid = bool(np.all(g_pre <= rtol)), bool(np.all(g_mid <= rtol))
        msg_pre = msg_mid = ""
        if ref is not None and not (ok_pre and ok_mid):
            msg_pre, msg_mid = _diagnose(got, ref, rtol, [len(x) for x in ids], mid_attr)
        cases.append((pre_desc, ok_pre, "" if ok_pre else f"{_site_list(g_pre > rtol, 'resid_pre')}: {msg_pre}"))
        cases.append((mid_desc, ok_mid, "" if ok_mid else f"{_site_list(g_mid > rtol, 'resid_mid')}: {msg_mid}"))
        got_cut, why_cut, left_cut = _call(fn, model, cut, (k, 2 * n_layers, d))
        left += left_cut
        if got_cut is None:
            cases.append((cut_desc, False, why_cut))
        else:
            ref_cut = _references(model, cut, [(len(c) - 1,) for c in cut], extra=False)
            want_cut = interleave(ref_cut["pre"][:, 0], ref_cut["mid"][:, 0])
            bad = np.any(relative_gap(got_cut, want_cut) > rtol, axis=1)
            cases.append((cut_desc, not bad.any(), "" if not bad.any() else
                          "fix the cases above first" if not (ok_pre and ok_mid) else
                          _padding_hint(bad, [len(x) for x in cut])
                          or f"{int(bad.sum())} of {k} samples differ: read each sample at its own last real token"))
        if cached is not None:
            if cached.shape != shape:
                cases.append(("equals the cached capture of these samples", False,
                              f"the cached array has shape {cached.shape}, expected {shape}: pass the "
                              f"cached rows of these {k} samples, runs[0].acts[:{k}]"))
            else:
                worst = float(np.max(relative_gap(got, cached)))
                desc = (f"equals the cached capture of these {k} samples (the library's, made in batches): "
                        + ("identical, bit for bit" if worst == 0 else
                           f"largest gap {number(worst, 1)} of a site's largest value"))
                why = "see the cases above"
                if not matches_cache and ok_pre and ok_mid:
                    engine = float(np.max(relative_gap(want, cached)))
                    why = ("the cached capture differs from this model's own states too (largest gap "
                           f"{number(engine, 2)}): it was captured from another model, precision or samples, so "
                           "this case cannot judge your function")
                cases.append((desc, matches_cache, why))
    cases.append(("leaves no hooks on the model", left == 0,
                  f"{left} hooks were still registered after your function returned (now removed): "
                  "remove every handle (handle.remove()) in a finally block, or later forward passes "
                  "run your hooks too"))
    return report(cases, width=68)


def _diagnose(got: np.ndarray, ref: dict[str, np.ndarray], rtol: float, lengths: Sequence[int],
              mid_attr: str) -> tuple[str, str]:
    """The likely mistake behind wrong resid_pre and resid_mid values: (message, message).

    ``ref`` from :func:`_references` at positions (last, first) of each sample."""
    n_layers = ref["pre"].shape[2]
    last = {key: v[:, 0] for key, v in ref.items()}
    first = {key: v[:, 1] for key, v in ref.items()}
    pre, mid = last["pre"], last["mid"]
    want = np.stack([pre, mid], axis=2).reshape(len(pre), 2 * n_layers, -1)
    gap = relative_gap(got, want)
    normed = last.get("pre_normed")
    layer_out = last["layer_out"]
    # mistakes that touch both sites alike: the token, the sites' order
    common = _padding_hint(np.any(gap > rtol, axis=1), lengths)
    if not common and np.all(relative_gap(got[:, :n_layers], pre) <= rtol) \
            and np.all(relative_gap(got[:, n_layers:], mid) <= rtol):
        common = ("your values are right but in another order: all resid_pre first, then all resid_mid. "
                  "The sites alternate: resid_pre.0, resid_mid.0, resid_pre.1, … (positions 2l and 2l + 1)")
    first_tok = ("these are the first token's values: read each sample at its last real token, "
                 "hidden[0, -1] for one unpadded sample")
    msg_pre = common or _explain(got[:, 0::2], [
        (layer_out, "your resid_pre.l is the OUTPUT of layer l, i.e. the input of layer l + 1: off by one "
                    "layer. A forward hook sees a module's output; register_forward_pre_hook sees its input"),
        (normed, "your values are normalised: the output of input_layernorm (the input of self_attn). "
                 "resid_pre.l is the input of the layer itself, before its first norm"),
        (mid, f"your resid_pre.l is resid_mid.l: the input of {mid_attr}, not of the layer"),
        (first["pre"], first_tok),
    ], rtol) or ("not the input of model.model.layers[l] at the last token: hook the decoder layer "
                 "itself (model.model.layers[l].register_forward_pre_hook) and read args[0][0, -1]")
    msg_mid = common or _explain(got[:, 1::2], [
        (last["mid_out"],
         f"your values are the OUTPUT of {mid_attr} (normalised: the input of the MLP), not its input: "
         "use register_forward_pre_hook on it"),
        (normed, "your values are the output of input_layernorm (the input of self_attn), normalised and "
                 "before the attention add"),
        (mid - pre, "your values are the attention block's write (the output of self_attn) without the "
                    f"stream it is added to: resid_mid.l = resid_pre.l + that write, the input of {mid_attr}"),
        (pre, "your resid_mid.l is resid_pre.l (the layer's input): it must come after the attention add"),
        (layer_out, "your resid_mid.l is the layer's output, after the MLP: read it before the MLP, at "
                    f"the input of {mid_attr}"),
        (first["mid"], first_tok),
    ], rtol) or (f"not the input of layers[l].{mid_attr} at the last token: use "
                 "tdcourse.models.residual_sites(model), which gives each layer's pre-MLP module")
    return msg_pre, msg_mid
