"""The mechanism: Jacobians of the decoder layers (the sequel's claims S1–S4, chapter 8).

A decoder layer maps the residual stream ``h_l`` to ``h_{l+1} = h_l + f_l(h_l)`` (attention and
MLP, skip included). Linearised at one token, it is the **layer Jacobian**

    J_l = ∂h_{l+1}[p] / ∂h_l[p]          (d_model × d_model; row = output unit, column = input unit)

at token ``p`` (the last, by default), with the earlier tokens' states held fixed. Under causal
attention this is exact: nothing at the earlier tokens depends on token ``p``, so the block of the
full-sequence Jacobian that belongs to token ``p`` is this one, and chaining the blocks of the
layers, ``P = J_{L-1} ⋯ J_0``, gives the exact end-to-end Jacobian of token ``p``'s state. It is
also cheap: the earlier tokens' keys and values are computed once, and the map of token ``p``
alone is differentiated (:func:`last_token_map`, :func:`layer_jacobians`), instead of the
``seq × d_model`` inputs of the naive full-sequence Jacobian (:func:`full_sequence_jacobian`,
kept for the tests and ``benchmarks/bench_jacobians.py``).

The sources. Fernando & Guitchounts, *Dynamics of the Transformer Residual Stream: Coupling
Spectral Geometry to Network Topology*, arXiv:2605.14258 (2026), the authors' sequel to the
paper the course reproduces, computed exact layer Jacobians of Llama 3.1 8B, Gemma 4 E4B and
OLMo 3 7B. Its full text was not available to us; what we know of it comes from its abstract and
from two posts by the first author on the authors' blog *Of Two Minds*, "Watching a transformer
spin" (11 June 2026) and "The Non-Normal Squeeze Through a Transformer" (2 July 2026). The posts
define the measures in words only; every formula here is ours, and where the words allow several
(self-alignment, effective rank, the Schur ordering) all of them are computed:

* **S1** rotation: the share of a layer's eigenvalues with a non-zero imaginary part
  (:func:`complex_share`), against the share of a random real Gaussian (Ginibre) matrix of the
  same width, ``1 - E[#real]/n`` with ``E[#real]`` from Edelman, Kostlan & Shub, "How many
  eigenvalues of a random matrix are real?", J. Amer. Math. Soc. 7 (1994) 247–267
  (:func:`ginibre_real_count`, :func:`ginibre_complex_share`), and against the random-init model.
* **S2** self-alignment, "how much a matrix's input and output directions coincide"
  (:data:`ALIGNMENTS`, :func:`alignments`): the symmetric part's share of the energy (primary,
  on the layer's write ``J - I``), the alignment of matching singular vectors, and the eigenvector
  condition (1 for a normal matrix).
* **S3** the end-to-end product's effective rank under three definitions (:func:`effective_rank`):
  the exponential of the entropy of the normalised singular values (Roy & Vetterli, "The effective
  rank: a measure of effective dimensionality", EUSIPCO 2007; primary), the participation ratio
  ``(Σσ²)² / Σσ⁴`` and the stable rank ``‖P‖_F² / ‖P‖_2²``.
* **S4** the non-normal part: the complex Schur form ``J = Z T Z^H`` (``scipy.linalg.schur`` and
  ``rsf2csf``; ``T = D + N``, ``D`` the eigenvalues, ``N`` the strictly upper triangle), rebuilt
  with a knob as ``Z (D + c N) Z^H`` (:func:`schur_form`, :func:`with_knob`), ``N`` replaced by a
  random strictly upper triangle of the same norm (:func:`random_nonnormal`), and the skip-less
  product of the ``J_l - I``. ``Z D Z^H`` depends on the order of the eigenvalues on the diagonal
  of ``T``; ours is fixed and stated (:data:`ORDERINGS`).

Scope: the one-token map is written for the Llama family (:data:`SUPPORTED_FAMILIES`: SmolLM2 and
the stand-ins); other families are refused with a message saying what their map needs
(:func:`check_family`). Every map is checked against the model's own forward pass at the point it
is linearised at.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .verdicts import Verdict, judge

__all__ = [
    "SEQUEL",
    "SUPPORTED_FAMILIES",
    "LayerWeights",
    "check_family",
    "layer_weights",
    "residual_inputs",
    "last_token_map",
    "layer_jacobian",
    "layer_jacobians",
    "full_sequence_jacobian",
    "finite_difference_jacobian",
    "ginibre_real_count",
    "ginibre_complex_share",
    "simulate_ginibre_share",
    "complex_share",
    "symmetric_share",
    "singular_alignment",
    "eigvec_alignment",
    "ALIGNMENTS",
    "RANKS",
    "effective_rank",
    "ORDERINGS",
    "schur_form",
    "with_knob",
    "random_nonnormal",
    "henrici",
    "KNOB",
    "DEFAULT_BUDGET_S",
    "MAX_SAMPLES",
    "COST",
    "Plan",
    "macs_per_token",
    "costs",
    "plan",
    "Result",
    "sample_input_ids",
    "analyse",
    "analyse_prompts",
    "kept_result",
    "quantized_run",
    "rotation_tie",
    "linear_teleport",
    "S1_CRITERION",
    "S2_CRITERION",
    "S3_CRITERION",
    "S4_CRITERION",
    "PRIMARY",
    "s1_yardstick",
    "verdicts",
    "findings_table",
    "findings_notes",
    "check_layer_jacobian",
    "check_effective_rank",
    "check_symmetric_share",
    "check_knob",
]

SEQUEL = ("Fernando & Guitchounts, Dynamics of the Transformer Residual Stream: Coupling Spectral Geometry to "
          "Network Topology, arXiv:2605.14258 (2026), read via the authors' posts")
"""The sequel the claims S1–S4 come from (its full text was not available; see the module docstring)."""

#: Families whose one-token layer map :func:`last_token_map` implements (pre-norm RMSNorm, RoPE
#: with ``rotate_half``, grouped-query attention, gated MLP; biases allowed).
SUPPORTED_FAMILIES = ("llama",)

_OTHER_FAMILIES = (
    "Other families need their own one-token map: OLMo-2/3 normalise the queries and keys (q_norm, "
    "k_norm) and each block's output before the skip adds it; Gemma-2/3 add sandwich norms, RMSNorm "
    "weights of the form (1 + w), scaled embeddings and logit soft-capping; Qwen3 normalises queries "
    "and keys; Mistral and Gemma-2/3 may use sliding-window attention. Write the map for the family "
    "(as tdcourse.jacobians.last_token_map does for Llama) and check it against the model's own "
    "forward pass, as layer_jacobians does."
)


def check_family(model) -> str:
    """The model's family, if :func:`last_token_map` supports it.

    Parameters
    ----------
    model : transformers causal LM or its config

    Returns
    -------
    str
        ``"llama"``.

    Raises
    ------
    tdcourse.models.UnsupportedModelError
        For any other family, saying what its map would need.
    """
    from .models import UnsupportedModelError

    config = getattr(model, "config", model)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    family = getattr(text, "model_type", None)
    if family not in SUPPORTED_FAMILIES:
        raise UnsupportedModelError(
            f"Layer Jacobians are implemented for the Llama family (SmolLM2, Llama 3.x, the course's "
            f"stand-ins), not for {family!r} models. {_OTHER_FAMILIES}")
    return family


# --------------------------------------------------------------------------- the one-token map


@dataclass(frozen=True)
class LayerWeights:
    """The weights of one Llama decoder layer, as plain tensors of one dtype (4-bit NF4 dequantised).

    Attributes
    ----------
    q, k, v, o, gate, up, down : tuple of (torch.Tensor, torch.Tensor or None)
        ``(weight, bias)`` of each linear map; ``weight`` has shape ``(out_features, in_features)``.
    norm1, norm2 : torch.Tensor of shape (d_model,)
        RMSNorm weights before the attention and before the MLP.
    eps1, eps2 : float
        Their epsilons.
    n_heads, n_kv_heads, head_dim : int
    scaling : float
        The attention's score scale (``head_dim ** -0.5`` for Llama).
    act : callable
        The MLP's elementwise activation (SiLU for Llama).
    """

    q: tuple
    k: tuple
    v: tuple
    o: tuple
    gate: tuple
    up: tuple
    down: tuple
    norm1: Any
    norm2: Any
    eps1: float
    eps2: float
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scaling: float
    act: Callable

    @property
    def d_model(self) -> int:
        return int(self.norm1.shape[0])


def _dense(linear, dtype, device):
    """``(weight, bias)`` of a linear layer as ``dtype`` tensors; a 4-bit NF4 layer read as what it computes.

    A bitsandbytes ``Linear4bit`` is applied to the identity (``W[:, m] = lin(e_m) - lin(0)``):
    its own forward, whatever layout its backend keeps the packed weights in (bitsandbytes'
    CPU backend repacks them at the first forward pass, after which ``dequantize_4bit`` of the
    stored data no longer gives the weights).
    """
    import torch

    w = linear.weight
    b = getattr(linear, "bias", None)
    if hasattr(w, "quant_state"):  # bitsandbytes Params4bit: the 4-bit copy's own (rounded) weights
        n_in = int(linear.in_features)
        dev = w.device
        cdt = getattr(linear, "compute_dtype", None) or torch.float32
        with torch.no_grad():
            eye = torch.eye(n_in, dtype=cdt, device=dev)
            zero = torch.zeros(1, n_in, dtype=cdt, device=dev)
            out = linear(eye).to(torch.float64) - linear(zero).to(torch.float64)  # (n_in, n_out)
        w = out.T
    return (w.detach().to(device=device, dtype=dtype),
            None if b is None else b.detach().to(device=device, dtype=dtype))


def _compute_device(model):
    import torch

    device = next(model.parameters()).device
    return torch.device("cpu") if device.type == "mps" else device  # no float64 on Apple GPUs


def layer_weights(model, layer: int, dtype=None) -> LayerWeights:
    """The weights of decoder layer ``layer`` of a Llama-family model, in ``dtype``.

    Parameters
    ----------
    model : transformers Llama-style causal LM (also its 4-bit NF4 copy)
    layer : int
        ``0 … n_layers - 1``.
    dtype : torch.dtype, default torch.float64

    Returns
    -------
    LayerWeights
        On the model's device (the CPU for a model on Apple's MPS, which has no float64).

    Raises
    ------
    ValueError
        ``layer`` out of range.
    tdcourse.models.UnsupportedModelError
        Not a Llama-family model.
    """
    import torch

    from .models import decoder_layers

    check_family(model)
    dtype = torch.float64 if dtype is None else dtype
    layers = decoder_layers(model)
    if isinstance(layer, bool) or int(layer) != layer or not 0 <= int(layer) < len(layers):
        raise ValueError(f"layer must be an integer in 0 … {len(layers) - 1}, got {layer!r}")
    blk = layers[int(layer)]
    att, mlp = blk.self_attn, blk.mlp
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    device = _compute_device(model)
    return LayerWeights(
        q=_dense(att.q_proj, dtype, device), k=_dense(att.k_proj, dtype, device),
        v=_dense(att.v_proj, dtype, device), o=_dense(att.o_proj, dtype, device),
        gate=_dense(mlp.gate_proj, dtype, device), up=_dense(mlp.up_proj, dtype, device),
        down=_dense(mlp.down_proj, dtype, device),
        norm1=blk.input_layernorm.weight.detach().to(device=device, dtype=dtype),
        norm2=blk.post_attention_layernorm.weight.detach().to(device=device, dtype=dtype),
        eps1=float(blk.input_layernorm.variance_epsilon), eps2=float(blk.post_attention_layernorm.variance_epsilon),
        n_heads=int(config.num_attention_heads), n_kv_heads=int(config.num_key_value_heads),
        head_dim=int(att.head_dim), scaling=float(att.scaling), act=mlp.act_fn)


def _linear(x, wb):
    import torch

    return torch.nn.functional.linear(x, wb[0], wb[1])


def _rms(x, weight, eps):
    """Llama's RMSNorm in the input's own dtype (the model's casts to float32 are left out)."""
    import torch

    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_half(x):
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x, cos, sin):
    return x * cos + _rotate_half(x) * sin


def _prefix_kv(w: LayerWeights, states, cos, sin):
    """Keys (after RoPE) and values of the earlier tokens: ``(n_kv, P, head_dim)`` each."""
    h = _rms(states, w.norm1, w.eps1)
    n = states.shape[0]
    k = _linear(h, w.k).view(n, w.n_kv_heads, w.head_dim).transpose(0, 1)
    v = _linear(h, w.v).view(n, w.n_kv_heads, w.head_dim).transpose(0, 1)
    return _rope(k, cos, sin), v


def _one_token(w: LayerWeights, x, keys, values, cos, sin):
    """The layer's output at one token from its input ``x`` (d,), earlier keys/values fixed."""
    import torch

    h = _rms(x, w.norm1, w.eps1)
    g, rep, hd = w.n_kv_heads, w.n_heads // w.n_kv_heads, w.head_dim
    q = _rope(_linear(h, w.q).view(g, rep, hd), cos, sin)
    k = _rope(_linear(h, w.k).view(g, hd), cos, sin)
    v = _linear(h, w.v).view(g, hd)
    keys = torch.cat((keys, k[:, None]), dim=1)       # (g, P + 1, hd)
    values = torch.cat((values, v[:, None]), dim=1)
    attn = torch.softmax(torch.einsum("grd,gtd->grt", q, keys) * w.scaling, dim=-1)
    mid = x + _linear(torch.einsum("grt,gtd->grd", attn, values).reshape(-1), w.o)
    h2 = _rms(mid, w.norm2, w.eps2)
    return mid + _linear(w.act(_linear(h2, w.gate)) * _linear(h2, w.up), w.down)


def _full_sequence(w: LayerWeights, states, cos, sin):
    """The layer's output at every token (causal attention) from its inputs ``states`` (T, d)."""
    import torch

    n = states.shape[0]
    g, rep, hd = w.n_kv_heads, w.n_heads // w.n_kv_heads, w.head_dim
    h = _rms(states, w.norm1, w.eps1)
    q = _rope(_linear(h, w.q).view(n, g, rep, hd).permute(1, 2, 0, 3), cos, sin)   # (g, rep, T, hd)
    k = _rope(_linear(h, w.k).view(n, g, hd).transpose(0, 1), cos, sin)           # (g, T, hd)
    v = _linear(h, w.v).view(n, g, hd).transpose(0, 1)
    scores = torch.einsum("grqd,gtd->grqt", q, k) * w.scaling
    causal = torch.ones(n, n, dtype=torch.bool, device=states.device).tril()
    attn = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    out = torch.einsum("grqt,gtd->qgrd", attn, v).reshape(n, -1)
    mid = states + _linear(out, w.o)
    h2 = _rms(mid, w.norm2, w.eps2)
    return mid + _linear(w.act(_linear(h2, w.gate)) * _linear(h2, w.up), w.down)


def _check_ids(input_ids) -> list[int]:
    ids = [int(t) for t in input_ids]
    if not ids:
        raise ValueError("input_ids is empty: a Jacobian needs a prompt of at least one token")
    return ids


def _position(position: int, n_tokens: int) -> int:
    if isinstance(position, bool) or int(position) != position or not -n_tokens <= int(position) < n_tokens:
        raise ValueError(f"position must be an integer token index in {-n_tokens} … {n_tokens - 1} for this "
                         f"prompt of {n_tokens} tokens, got {position!r}")
    return int(position) % n_tokens


def residual_inputs(model, input_ids: Sequence[int]) -> np.ndarray:
    """The residual stream of one prompt at every layer boundary and every token.

    One forward pass of the model (its own dtype, no attention mask: one unpadded prompt) with
    pre-hooks on the decoder layers and on the final norm.

    Parameters
    ----------
    model : transformers Llama-style causal LM
    input_ids : sequence of int, length T >= 1

    Returns
    -------
    ndarray of shape (n_layers + 1, T, d_model), float32
        Entry ``b < n_layers`` is the input of decoder layer ``b`` (``resid_pre.b``) at every
        token; entry ``n_layers`` is the output of the last layer (``resid_post.{L-1}``, the
        final norm's input).
    """
    import torch

    from .hooks import _layer_input
    from .models import decoder_layers

    ids = _check_ids(input_ids)
    layers = decoder_layers(model)
    base = getattr(model, "model", model)
    out: list = [None] * (len(layers) + 1)
    handles = []
    try:
        for l, blk in enumerate(layers):
            def hook(module, args, kwargs, _l=l):
                out[_l] = _layer_input(args, kwargs)[0].detach().float().cpu()
            handles.append(blk.register_forward_pre_hook(hook, with_kwargs=True))

        def final(module, args):
            out[-1] = args[0][0].detach().float().cpu()
        handles.append(base.norm.register_forward_pre_hook(final))
        device = next(model.parameters()).device
        with torch.inference_mode():
            base(input_ids=torch.tensor([ids], device=device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(out).numpy()


def _rope_tables(model, n_tokens: int, dtype, device):
    """The model's own RoPE cos/sin for positions ``0 … n_tokens - 1``: ``(T, head_dim)`` each, in ``dtype``."""
    import torch

    base = getattr(model, "model", model)
    rotary = getattr(base, "rotary_emb", None)
    if rotary is None:
        raise TypeError(f"{type(model).__name__} has no model.rotary_emb: not a Llama-family model")
    probe = torch.zeros(1, n_tokens, 1, dtype=torch.float32, device=next(model.parameters()).device)
    with torch.no_grad():
        cos, sin = rotary(probe, torch.arange(n_tokens, device=probe.device)[None])
    return cos[0].to(device=device, dtype=dtype), sin[0].to(device=device, dtype=dtype)


def last_token_map(model, input_ids: Sequence[int], layer: int, position: int = -1, states: np.ndarray | None = None,
                   dtype=None):
    """Decoder layer ``layer`` as a map of one token's input, the earlier tokens held fixed.

    The earlier tokens' keys and values are computed once from their states; the returned ``f``
    then runs one token: ``f(x) = x + attn(x) + mlp(x + attn(x))`` at ``position``, in ``dtype``
    (float64 by default: the model's own float32 casts in RMSNorm and softmax are left out).
    ``f(x0)`` reproduces the model's own output there (up to the model's float32 rounding).

    Parameters
    ----------
    model : transformers Llama-style causal LM (its 4-bit copy too: weights are dequantised)
    input_ids : sequence of int, length T
        One unpadded prompt (RoPE positions ``0 … T - 1``, as the model reads it).
    layer : int
    position : int, default -1
        The token, ``-T … T - 1``; later tokens do not enter (causal attention).
    states : ndarray of shape (n_layers + 1, T, d_model), optional
        :func:`residual_inputs` of this prompt (computed when None).
    dtype : torch.dtype, default torch.float64

    Returns
    -------
    f : callable
        ``torch.Tensor (d_model,) -> torch.Tensor (d_model,)``, differentiable with ``torch.func``.
    x0 : torch.Tensor of shape (d_model,)
        The token's input of the layer in this prompt (``resid_pre.layer``).
    y0 : torch.Tensor of shape (d_model,)
        The model's own output there (``resid_pre.{layer+1}``, or ``resid_post`` for the last layer).

    Raises
    ------
    ValueError
        A bad layer, position or ``states`` shape.
    tdcourse.models.UnsupportedModelError
        Not a Llama-family model (the message says what other families need).
    """
    w, keys, values, c, s, x0, y0 = _setup(model, input_ids, layer, position, states, dtype)

    def f(x):
        return _one_token(w, x, keys, values, c, s)

    return f, x0, y0


def _setup(model, input_ids, layer, position, states, dtype, weights: LayerWeights | None = None):
    """Everything a one-token map needs: weights, the earlier tokens' keys/values, RoPE at the
    token, the token's input ``x0`` and the model's own output ``y0`` there."""
    import torch

    dtype = torch.float64 if dtype is None else dtype
    ids = _check_ids(input_ids)
    w = layer_weights(model, layer, dtype) if weights is None else weights
    p = _position(position, len(ids))
    if states is None:
        states = residual_inputs(model, ids)
    states = np.asarray(states)
    n_layers = states.shape[0] - 1 if states.ndim == 3 else -1
    if states.ndim != 3 or states.shape[1] != len(ids) or states.shape[2] != w.d_model or n_layers <= layer:
        raise ValueError(f"states must have shape (n_layers + 1, {len(ids)}, {w.d_model}) from residual_inputs of "
                         f"this prompt, got {states.shape}")
    device = w.norm1.device
    cos, sin = _rope_tables(model, p + 1, dtype, device)
    h = torch.as_tensor(states[layer, : p + 1], dtype=dtype, device=device)
    keys, values = _prefix_kv(w, h[:p], cos[:p], sin[:p])
    y0 = torch.as_tensor(states[layer + 1, p], dtype=dtype, device=device)
    return w, keys, values, cos[p], sin[p], h[p], y0


def _jacobian_forward(w: LayerWeights, x, keys, values, cos, sin):
    """The exact Jacobian of :func:`_one_token` at ``x``, by forward-mode in closed form.

    The identity's columns are pushed through every operation at once as a ``(d, …)`` tangent
    (row ``m``: the derivative along input unit ``m``); the result is transposed to
    ``J[i, m] = ∂out_i / ∂x_m``. About a third of the cost of ``torch.func.jacrev`` on the same map
    (which the tests compare it with), because each step is one matrix product.
    """
    import torch

    d = x.shape[0]
    g, rep, hd = w.n_kv_heads, w.n_heads // w.n_kv_heads, w.head_dim
    eye = torch.eye(d, dtype=x.dtype, device=x.device)

    def rms_and_tangent(z, dz, weight, eps):
        r = torch.sqrt(z.pow(2).mean() + eps)
        out = weight * z / r
        dout = (dz / r - torch.outer(dz @ z, z) / (d * r ** 3)) * weight
        return out, dout

    h, dh = rms_and_tangent(x, eye, w.norm1, w.eps1)
    q = _rope(_linear(h, w.q).view(g, rep, hd), cos, sin)
    dq = _rope((dh @ w.q[0].T).view(d, g, rep, hd), cos, sin)
    k = _rope(_linear(h, w.k).view(g, hd), cos, sin)
    dk = _rope((dh @ w.k[0].T).view(d, g, hd), cos, sin)
    v = _linear(h, w.v).view(g, hd)
    dv = (dh @ w.v[0].T).view(d, g, hd)
    all_keys = torch.cat((keys, k[:, None]), dim=1)                                  # (g, P+1, hd)
    all_values = torch.cat((values, v[:, None]), dim=1)
    attn = torch.softmax(torch.einsum("grd,gtd->grt", q, all_keys) * w.scaling, dim=-1)  # (g, rep, P+1)
    ds = torch.einsum("mgrd,gtd->mgrt", dq, all_keys)
    ds[..., -1] += torch.einsum("grd,mgd->mgr", q, dk)
    ds = ds * w.scaling
    da = attn * (ds - (attn * ds).sum(-1, keepdim=True))
    do = torch.einsum("mgrt,gtd->mgrd", da, all_values) + attn[None, :, :, -1, None] * dv[:, :, None, :]
    o = torch.einsum("grt,gtd->grd", attn, all_values).reshape(-1)
    mid = x + _linear(o, w.o)
    dmid = eye + do.reshape(d, -1) @ w.o[0].T
    h2, dh2 = rms_and_tangent(mid, dmid, w.norm2, w.eps2)
    gate = _linear(h2, w.gate)
    up = _linear(h2, w.up)
    act, dact = torch.func.jvp(w.act, (gate,), (torch.ones_like(gate),))   # elementwise: dact = act'(gate)
    dz = (dh2 @ w.gate[0].T) * (dact * up) + (dh2 @ w.up[0].T) * act
    return (dmid + dz @ w.down[0].T).T


_METHODS = ("forward", "jacrev", "jacfwd")


def layer_jacobians(model, input_ids: Sequence[int], layers: Sequence[int] | None = None, position: int = -1,
                    method: str = "forward", states: np.ndarray | None = None, check: bool = True,
                    rtol: float | None = None) -> np.ndarray:
    """``J_l = ∂h_{l+1}[p] / ∂h_l[p]`` of several decoder layers at one token of one prompt.

    One forward pass of the model gives every layer's input at every token
    (:func:`residual_inputs`); each layer is then linearised at token ``p`` as a one-token map
    with the earlier tokens' keys and values fixed (:func:`last_token_map`): exact under causal
    attention, and ``seq_len`` times less work than the full-sequence Jacobian.

    Parameters
    ----------
    model : transformers Llama-style causal LM
    input_ids : sequence of int, length T
    layers : sequence of int or None
        Layers to linearise (default: all, in order).
    position : int, default -1
        The token (``-1``: the last).
    method : {"forward", "jacrev", "jacfwd"}
        ``"forward"``: closed-form forward mode (fastest, the default); ``"jacrev"`` /
        ``"jacfwd"``: ``torch.func`` on the same map. They agree to float64 rounding (tested).
    states : ndarray of shape (n_layers + 1, T, d_model), optional
        :func:`residual_inputs` of the prompt, if already computed.
    check : bool, default True
        Check that each map reproduces the model's own output at the token.
    rtol : float or None
        Tolerance of that check, relative to the output's norm (default: 1e-4 for a float32
        model, 2e-2 for bfloat16, float16 and 4-bit NF4 models, whose kernels round at about
        that level; the map itself runs in float64 on the rounded weights).

    Returns
    -------
    ndarray of shape (n_selected, d_model, d_model), float64
        ``J[i, m] = ∂ out_i / ∂ in_m``: row = output unit, column = input unit; the skip is included
        (subtract the identity for the layer's own write ``J - I``).

    Raises
    ------
    ValueError
        Bad arguments.
    tdcourse.models.UnsupportedModelError
        Not a Llama-family model, or a layer's map does not reproduce the model's forward pass.
    """
    import torch

    from .models import UnsupportedModelError, decoder_layers

    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    check_family(model)
    ids = _check_ids(input_ids)
    n_layers = len(decoder_layers(model))
    layers = list(range(n_layers)) if layers is None else [int(l) for l in layers]
    if states is None:
        states = residual_inputs(model, ids)
    if rtol is None:  # the model's own forward pass rounds; the map computes in float64
        low = next(model.parameters()).dtype in (torch.bfloat16, torch.float16)
        nf4 = any(hasattr(p, "quant_state") for p in model.parameters())  # bitsandbytes' 4-bit kernels
        rtol = 2e-2 if low or nf4 else 1e-4
    out = []
    for l in layers:
        w, keys, values, c, s, x0, y0 = _setup(model, ids, l, position, states, torch.float64)

        def f(x, w=w, keys=keys, values=values, c=c, s=s):
            return _one_token(w, x, keys, values, c, s)

        if check:
            with torch.no_grad():
                y = f(x0)
            err = float(torch.linalg.vector_norm(y - y0) / torch.linalg.vector_norm(y0).clamp_min(1e-30))
            if not err <= rtol:
                raise UnsupportedModelError(
                    f"The one-token map of layer {l} does not reproduce the model's own forward pass (relative "
                    f"error {err:.2g} > {rtol:g}): this model's layer is not the Llama layer the map implements. "
                    + _OTHER_FAMILIES)
        if method == "forward":
            with torch.no_grad():
                jac = _jacobian_forward(w, x0, keys, values, c, s)
        else:
            jac = getattr(torch.func, method)(f)(x0)
        out.append(jac.detach().cpu().numpy())
    return np.stack(out) if out else np.empty((0, states.shape[2], states.shape[2]))


def layer_jacobian(model, input_ids: Sequence[int], layer: int, position: int = -1, method: str = "forward") -> np.ndarray:
    """One layer's Jacobian ``∂h_{l+1}[p] / ∂h_l[p]``, shape ``(d_model, d_model)``, float64.

    See :func:`layer_jacobians` (this is its single-layer case)."""
    return layer_jacobians(model, input_ids, [layer], position=position, method=method)[0]


def full_sequence_jacobian(model, input_ids: Sequence[int], layer: int, position: int = -1, use_model_layer: bool = False,
                           dtype=None) -> np.ndarray:
    """The naive reference: differentiate the layer's output at ``position`` w.r.t. its whole input.

    ``torch.func.jacrev`` of ``H ↦ layer(H)[p]`` with ``H`` the layer's input at all ``T`` tokens,
    shape ``(d, T, d)``, of which the block of token ``p`` is returned. Exact and ``T`` times as
    costly as :func:`layer_jacobians` (``benchmarks/bench_jacobians.py`` times the two).

    Parameters
    ----------
    model, input_ids, layer, position : as for :func:`layer_jacobians`
    use_model_layer : bool, default False
        Differentiate the model's own decoder layer module (transformers' code, which computes
        RMSNorm and softmax in float32 whatever the dtype) instead of this module's functional
        full-sequence layer (all in ``dtype``).
    dtype : torch.dtype, default torch.float64

    Returns
    -------
    ndarray of shape (d_model, d_model), float64
    """
    import torch

    from .models import decoder_layers

    dtype = torch.float64 if dtype is None else dtype
    ids = _check_ids(input_ids)
    p = _position(position, len(ids))
    states = residual_inputs(model, ids)
    w = layer_weights(model, layer, dtype)
    device = w.norm1.device
    cos, sin = _rope_tables(model, len(ids), dtype, device)
    h = torch.as_tensor(states[layer], dtype=dtype, device=device)
    if use_model_layer:
        import copy

        blk = copy.deepcopy(decoder_layers(model)[layer]).to(dtype)
        blk.self_attn.config._attn_implementation = "eager"

        def g(hh):
            return blk(hh[None], position_embeddings=(cos[None], sin[None]))[0][p]
    else:
        def g(hh):
            return _full_sequence(w, hh, cos, sin)[p]
    jac = torch.func.jacrev(g)(h)  # (d, T, d)
    return jac[:, p, :].detach().cpu().numpy()


def finite_difference_jacobian(f: Callable, x0, eps: float = 1e-5) -> np.ndarray:
    """Central finite differences of ``f`` at ``x0``: ``(f(x0 + ε e_m) - f(x0 - ε e_m)) / 2ε``.

    Parameters
    ----------
    f : callable
        ``torch.Tensor (d,) -> torch.Tensor (k,)`` (e.g. from :func:`last_token_map`); it is called
        once on a batch of ``2d`` inputs when it accepts one (``(2d, d) -> (2d, k)``), else ``2d``
        times.
    x0 : torch.Tensor of shape (d,)
    eps : float
        Step (in the input's units). The error is ``O(ε²)`` from the curvature plus ``O(δ/ε)`` from
        rounding (``δ`` ≈ 1e-16 ‖f‖ in float64).

    Returns
    -------
    ndarray of shape (k, d), float64
        Row = output, column = input, as :func:`layer_jacobians`.
    """
    import torch

    x0 = torch.as_tensor(x0)
    d = x0.shape[0]
    steps = torch.eye(d, dtype=x0.dtype, device=x0.device) * eps
    with torch.no_grad():
        cols = [(f(x0 + steps[m]) - f(x0 - steps[m])) / (2 * eps) for m in range(d)]
    return torch.stack(cols, dim=1).detach().cpu().numpy().astype(np.float64)


# --------------------------------------------------------------------------- measures (S1–S4)


def ginibre_real_count(n) -> np.ndarray:
    """Expected number of real eigenvalues of an ``n × n`` real Gaussian (Ginibre) matrix.

    Exact: ``E_n = 1/2 + √2 · ₂F₁(1, -1/2; n; 1/2) · Γ(n + 1/2) / (Γ(n) Γ(1/2))`` (Edelman,
    Kostlan & Shub 1994, Corollary 5.2), ``≈ √(2n/π)`` for large ``n``: 1 at n = 1, √2 at n = 2,
    ≈ 19.6 at n = 576, ≈ 51.6 at n = 4096.

    Parameters
    ----------
    n : int or array of int, >= 1

    Returns
    -------
    float or ndarray of float
        Same shape as ``n``.

    Raises
    ------
    ValueError
        ``n`` < 1 or not whole.
    """
    from scipy.special import gammaln, hyp2f1

    arr = np.asarray(n, dtype=float)
    if (arr < 1).any() or (arr != np.round(arr)).any():
        raise ValueError(f"n must be whole numbers >= 1, got {n!r}")
    ratio = np.exp(gammaln(arr + 0.5) - gammaln(arr) - gammaln(0.5))
    out = 0.5 + np.sqrt(2.0) * hyp2f1(1.0, -0.5, arr, 0.5) * ratio
    return float(out) if np.ndim(n) == 0 else out


def ginibre_complex_share(n) -> np.ndarray:
    """The share of complex (non-real) eigenvalues of an ``n × n`` Ginibre matrix: ``1 - E_n / n``.

    The yardstick of S1: about 96.6 % at n = 576, 98.7 % at n = 4096 (:func:`ginibre_real_count`).
    """
    return 1.0 - ginibre_real_count(n) / np.asarray(n, dtype=float)


def simulate_ginibre_share(n: int, n_matrices: int = 20, seed: int = 0) -> np.ndarray:
    """The complex share of ``n_matrices`` seeded ``n × n`` real Gaussian matrices (the simulated yardstick).

    Returns
    -------
    ndarray of shape (n_matrices,)
    """
    rng = np.random.default_rng(seed)
    return np.array([complex_share(np.linalg.eigvals(rng.standard_normal((int(n), int(n)))))
                     for _ in range(int(n_matrices))])


def complex_share(eigvals: np.ndarray, min_angle: float = 0.0, rtol: float = 1e-8) -> np.ndarray:
    """The share of eigenvalues that rotate: off the real axis (S1).

    Parameters
    ----------
    eigvals : ndarray of shape (..., n), complex
        Eigenvalues of real matrices as LAPACK returns them (real ones have an imaginary part of
        exactly 0; complex ones come in conjugate pairs).
    min_angle : float, default 0
        Count only eigenvalues at least this far from the real axis, ``|Im λ| > sin(min_angle) |λ|``
        (radians, in [0, π/2)): 0 counts any imaginary part (the sequel's words); e.g.
        ``np.deg2rad(1)`` leaves out rotations (and flips) by less than a degree.
    rtol : float, default 1e-8
        Imaginary parts up to ``rtol`` times the matrix's largest ``|λ|`` count as real: rounding,
        not rotation. LAPACK can split a cluster of equal real eigenvalues (the eigenvalue 1 of a
        layer that writes in few directions) into conjugate pairs whose imaginary parts are many
        orders of magnitude below this.

    Returns
    -------
    ndarray of shape (...) (a float for one matrix)
    """
    ev = np.asarray(eigvals)
    if ev.ndim < 1 or ev.shape[-1] == 0:
        raise ValueError(f"eigvals must have shape (..., n >= 1), got {ev.shape}")
    if not 0 <= min_angle < np.pi / 2:
        raise ValueError(f"min_angle must lie in [0, π/2), got {min_angle}")
    if not 0 <= rtol < 1:
        raise ValueError(f"rtol must lie in [0, 1), got {rtol}")
    floor = rtol * np.abs(ev).max(-1, keepdims=True)
    rot = np.abs(ev.imag) > np.maximum(np.sin(min_angle) * np.abs(ev), floor)
    out = rot.mean(-1)
    return float(out) if out.ndim == 0 else out


def symmetric_share(a: np.ndarray) -> np.ndarray:
    """The symmetric part's share of a matrix's energy: ``‖(A + Aᵀ)/2‖_F² / ‖A‖_F²`` (S2, candidate c).

    1 for a symmetric matrix, 0 for a skew-symmetric one (the generator of a rotation), 1/2 + 1/(2n)
    in expectation for an ``n × n`` Gaussian matrix; for a plane rotation by θ it is ``cos² θ``,
    and for its write ``R - I`` it is ``sin²(θ/2)`` (0 for a small rotation).

    Parameters
    ----------
    a : ndarray of shape (..., n, n), real

    Returns
    -------
    ndarray of shape (...); NaN where ``A = 0``.
    """
    a = _square(a, "a")
    total = np.einsum("...ij,...ij->...", a, a)
    cross = np.einsum("...ij,...ji->...", a, a)  # tr(A A) = Σ a_ij a_ji
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 0.5 * (1.0 + cross / total)
    return float(out) if np.ndim(out) == 0 else out


def singular_alignment(a: np.ndarray) -> np.ndarray:
    """Mean ``|⟨u_i, v_i⟩|`` of matching left and right singular vectors (S2, candidate a).

    The input direction ``v_i`` of the ``i``-th singular value and the output direction ``u_i`` it
    is sent to: 1 for a symmetric positive (semi)definite matrix, about ``√(2/(π n))`` for a
    Gaussian one. Ill-posed where singular values are (nearly) equal, e.g. for a rotation, whose
    singular vectors can be any orthonormal basis.

    Parameters
    ----------
    a : ndarray of shape (..., n, n)

    Returns
    -------
    ndarray of shape (...)
    """
    a = _square(a, "a")
    u, _, vh = np.linalg.svd(a)
    out = np.abs(np.einsum("...ji,...ij->...i", u, vh)).mean(-1)  # ⟨u_i, v_i⟩ = Σ_j u_ji vh_ij
    return float(out) if np.ndim(out) == 0 else out


def eigvec_alignment(t: np.ndarray) -> float:
    """Mean ``|y_iᴴ x_i| / (‖y_i‖ ‖x_i‖)`` of matching left and right eigenvectors (S2, candidate b).

    The reciprocal of each eigenvalue's condition number, averaged: 1 for a normal matrix (a
    rotation included), near 0 when eigenvectors are nearly parallel (strongly non-normal). The
    same for ``J`` and ``J - I`` (same eigenvectors).

    Parameters
    ----------
    t : ndarray of shape (n, n)
        The matrix, or its (complex) Schur form ``T`` (same eigenvalue condition numbers; the
        triangular form is the cheap way to get them).

    Returns
    -------
    float
    """
    t = _square(t, "t")
    if t.ndim != 2:
        raise ValueError(f"t must be one matrix (n, n), got {t.shape}")
    _, right = np.linalg.eig(t)           # unit-norm columns x_i
    left_h = np.linalg.inv(right)         # rows y_iᴴ with y_iᴴ x_i = 1
    return float(np.mean(1.0 / (np.linalg.norm(left_h, axis=1) * np.linalg.norm(right, axis=0))))


def _square(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2] or a.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., n, n) with n >= 1, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or inf")
    return a


#: Self-alignment candidates (S2), name -> what it is. The first is the chapter's primary.
ALIGNMENTS: dict[str, str] = {
    "symmetric share of J − I": "‖(A + Aᵀ)/2‖²_F / ‖A‖²_F of the layer's write A = J − I (primary)",
    "symmetric share of J": "the same on the whole layer J (skip included)",
    "singular vectors of J − I": "mean |⟨u_i, v_i⟩| of matching singular vectors of J − I",
    "singular vectors of J": "mean |⟨u_i, v_i⟩| of matching singular vectors of J",
    "eigenvector condition": "mean 1/κ_i of the eigenvalues (left/right eigenvectors; the same for J and J − I)",
}

#: Effective-rank definitions (S3, S4), name -> formula. The first is the primary.
RANKS: dict[str, str] = {
    "entropy": "exp(−Σ p_i log p_i), p_i = σ_i / Σσ (Roy & Vetterli 2007)",
    "participation": "(Σσ²)² / Σσ⁴ (participation ratio of the squared singular values)",
    "stable": "Σσ² / σ_max² = ‖P‖_F² / ‖P‖_2² (stable rank)",
}


def effective_rank(singular_values: np.ndarray, kind: str = "entropy") -> np.ndarray:
    """Effective rank of a matrix from its singular values (S3).

    Parameters
    ----------
    singular_values : ndarray of shape (..., n), >= 0
    kind : {"entropy", "participation", "stable"}
        ``"entropy"``: ``exp(H(p))`` with ``p_i = σ_i / Σσ`` (Roy & Vetterli 2007): n for equal
        singular values, 1 for a single one, and not an integer in between. ``"participation"``:
        ``(Σσ²)² / Σσ⁴``. ``"stable"``: ``Σσ² / max σ²`` (``‖P‖_F² / ‖P‖_2²``). All three lie in
        [1, n] and equal n exactly when the singular values are equal.

    Returns
    -------
    ndarray of shape (...)

    Raises
    ------
    ValueError
        An unknown ``kind``, negative or non-finite values, or all zero.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    if kind not in RANKS:
        raise ValueError(f"kind must be one of {list(RANKS)}, got {kind!r}")
    if s.ndim < 1 or s.shape[-1] == 0 or not np.isfinite(s).all() or (s < 0).any():
        raise ValueError(f"singular_values must be finite, >= 0, shape (..., n >= 1); got shape {s.shape}")
    if (s.max(-1) <= 0).any():
        raise ValueError("singular_values are all 0: a zero matrix has no effective rank")
    if kind == "entropy":
        p = s / s.sum(-1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
        out = np.exp(h)
    elif kind == "participation":
        s2 = s ** 2
        out = s2.sum(-1) ** 2 / (s2 ** 2).sum(-1)
    else:
        s2 = s ** 2
        out = s2.sum(-1) / s2.max(-1)
    return float(out) if np.ndim(out) == 0 else out


#: Orders of the eigenvalues on the diagonal of the Schur form (S4). ``Z D Zᴴ`` depends on it.
ORDERINGS: dict[str, str] = {
    "modulus": "descending modulus |λ|, ties (a conjugate pair) by ascending angle arg λ (primary)",
    "lapack": "as LAPACK's QR algorithm returns them (scipy.linalg.schur then rsf2csf): deterministic for a "
              "given matrix and library build, but not a rule",
}


def schur_form(j: np.ndarray, order: str = "modulus") -> tuple[np.ndarray, np.ndarray]:
    """The complex Schur form ``J = Z T Zᴴ`` with the eigenvalues in a stated order (S4).

    The real Schur form (``scipy.linalg.schur``), turned complex (``scipy.linalg.rsf2csf``), then
    reordered by LAPACK's ``ztrexc`` (one move per eigenvalue, a backward-stable unitary update).

    Parameters
    ----------
    j : ndarray of shape (n, n), real
    order : {"modulus", "lapack"}
        See :data:`ORDERINGS`.

    Returns
    -------
    t : ndarray of shape (n, n), complex128
        Upper triangular; its diagonal holds the eigenvalues in ``order``.
    z : ndarray of shape (n, n), complex128
        Unitary.

    Raises
    ------
    ValueError
        Not a finite square matrix, or an unknown ``order``.
    """
    import scipy.linalg as sl

    j = _square(j, "j")
    if j.ndim != 2:
        raise ValueError(f"j must be one matrix (n, n), got {j.shape}")
    if order not in ORDERINGS:
        raise ValueError(f"order must be one of {list(ORDERINGS)}, got {order!r}")
    t, z = sl.rsf2csf(*sl.schur(np.asarray(j, dtype=np.float64), output="real"))
    if order == "modulus":
        return _sorted_schur(t, z)
    return np.triu(t), np.asarray(z)


def _modulus_order(lam: np.ndarray) -> np.ndarray:
    """Indices sorting eigenvalues by descending modulus, ties by ascending angle in (−π, π].

    Moduli equal to 12 significant digits are ties (the two members of a conjugate pair differ
    in the last bits): the one with the negative imaginary part comes first.
    """
    lam = np.asarray(lam)
    scale = max(float(np.abs(lam).max()), 1e-300)
    return np.lexsort((np.angle(lam), -np.round(np.abs(lam) / scale, 12)))


def _sorted_schur(t: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder a complex Schur form into descending modulus, ties by ascending angle (LAPACK ztrexc).

    The order is computed once; each step moves the next eigenvalue of that order up to its place
    (the ones in between shift down by one), so ``n - 1`` calls of ``ztrexc`` at most.
    """
    from scipy.linalg import lapack

    t = np.asfortranarray(t, dtype=np.complex128)
    z = np.asfortranarray(z, dtype=np.complex128)
    lam = np.diagonal(t).copy()
    current = list(_modulus_order(lam).argsort())  # current[i]: the target rank of the eigenvalue at position i
    for k in range(len(lam) - 1):
        i = current.index(k, k)
        if i != k:
            t, z, info = lapack.ztrexc(t, z, i + 1, k + 1, overwrite_a=1, overwrite_q=1)
            if info != 0:  # pragma: no cover - LAPACK could not swap two (nearly equal) eigenvalues
                raise np.linalg.LinAlgError(f"ztrexc failed to reorder the Schur form (info {info})")
            current.insert(k, current.pop(i))
    return np.triu(np.asarray(t)), np.asarray(z)


def with_knob(t: np.ndarray, z: np.ndarray, c: float) -> np.ndarray:
    """``Z (D + c N) Zᴴ``: the matrix with its non-normal part scaled by ``c`` (S4).

    ``c = 1`` gives the matrix back, ``c = 0`` the normal matrix with the same eigenvalues and
    Schur vectors, ``c = 2`` doubles the non-normal part.

    Parameters
    ----------
    t, z : from :func:`schur_form`
    c : float

    Returns
    -------
    ndarray of shape (n, n), complex128
    """
    t = np.asarray(t)
    tc = np.triu(t, 1) * c + np.diag(np.diagonal(t))
    return (z * 1.0) @ tc @ z.conj().T


def random_nonnormal(t: np.ndarray, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``Z (D + N') Zᴴ`` with ``N'`` a random strictly upper triangle of the same Frobenius norm as ``N`` (S4).

    ``N'`` has i.i.d. complex Gaussian entries, rescaled to ``‖N'‖_F = ‖N‖_F``: the same amount of
    non-normality, without its structure.

    Parameters
    ----------
    t, z : from :func:`schur_form`
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of shape (n, n), complex128
    """
    t = np.asarray(t)
    n = t.shape[0]
    nn = np.triu(t, 1)
    r = np.triu(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)), 1)
    norm_r = np.linalg.norm(r)
    r = r * (np.linalg.norm(nn) / norm_r) if norm_r > 0 else r
    return z @ (np.diag(np.diagonal(t)) + r) @ z.conj().T


def henrici(t: np.ndarray) -> float:
    """Departure from normality of a Schur form: ``‖N‖_F / ‖T‖_F`` (0 for a normal matrix; Henrici 1962)."""
    t = np.asarray(t)
    return float(np.linalg.norm(np.triu(t, 1)) / np.linalg.norm(t))


# --------------------------------------------------------------------------- how much to compute


#: The Schur knob's values of ``c`` (S4); 1 is the layer itself.
KNOB = (0.0, 0.5, 1.0, 1.5, 2.0)

#: Default budget of one run's analysis, in estimated seconds of one CPU core (see :func:`plan`):
#: one sample of SmolLM2-135M with every measure, all samples of the 4-layer stand-in, and the
#: eigenvalues of one layer of the 8B-shaped one.
DEFAULT_BUDGET_S = 120.0

#: Most samples the rule takes, whatever the budget.
MAX_SAMPLES = 16

#: Seconds per unit of work on one core of the machine the course is built on (2 shared cores
#: under a load average of about 6, float64; ``benchmarks/bench_jacobians.py`` measures them):
#: per multiply-add of a one-token Jacobian, and per ``d³`` of a layer's Schur form in both
#: orders (``spectra``), of the S2 candidates that need an SVD or eigenvectors
#: (``alternatives``), of the eigenvalues alone, of one complex ``d × d`` product (``zgemm``), and
#: of the singular values of a real and of a complex matrix.
COST = {"jacobian": 1.2e-10, "spectra": 6.0e-9, "alternatives": 6.3e-9, "eigvals": 1.5e-9, "zgemm": 3.4e-10,
        "svd_real": 2.6e-10, "svd_complex": 8.6e-10}


@dataclass(frozen=True)
class Plan:
    """What :func:`analyse` computes for one run, chosen by a rule from a time budget.

    Attributes
    ----------
    samples : tuple of int
        Indices (into the run's N samples) of the samples whose Jacobians are computed, evenly
        spaced over the N (the first always).
    layers : tuple of int
        Layers whose Jacobians are computed (all of them in a full plan).
    full : bool
        True: every layer, the end-to-end products (S3) and, unless the knob is left out, the
        Schur forms, the knob and the S2 candidates (S4). False: the budget does not hold one
        full sample; only the eigenvalues (S1) and symmetric shares (S2) of ``layers``, on one
        sample.
    seconds_per_sample : float
        The rule's estimate for the full analysis of one sample (one core).
    budget_s : float
    text : str
        The decision in words, for the chapter to print.
    """

    samples: tuple
    layers: tuple
    full: bool
    seconds_per_sample: float
    budget_s: float
    text: str


def macs_per_token(config) -> float:
    """Multiply-adds of one decoder layer's linear maps for one token, from a model config.

    ``d (n_heads + 2 n_kv_heads) h + n_heads h d + 3 d d_ff`` with ``h`` the head width.
    """
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    d = int(config.hidden_size)
    nh, nkv = int(config.num_attention_heads), int(config.num_key_value_heads)
    hd = int(getattr(config, "head_dim", None) or d // nh)
    return float(d * (nh + 2 * nkv) * hd + nh * hd * d + 3 * d * int(config.intermediate_size))


def costs(d_model: int, n_layers: int, macs: float, n_knob: int = len(KNOB)) -> dict[str, float]:
    """The rule's estimates, in seconds of one core (:data:`COST`), of the pieces of one run's analysis.

    Returns
    -------
    dict
        ``"jacobian"`` and ``"eigvals"`` per layer; ``"sample"``: one sample with every measure
        (with the Schur knob when ``n_knob > 0``); ``"run"``: once per run (the S2 candidates on the
        first sample).
    """
    d3 = float(d_model) ** 3
    jac = COST["jacobian"] * d_model * macs
    if n_knob:
        # per layer: two changes of Schur basis, and per running product (the knob's c ≠ 1, the
        # LAPACK order at c = 0 and 2, the random N) one full and one triangular complex product
        per_layer = jac + COST["spectra"] * d3 + COST["zgemm"] * d3 * (2 + 1.5 * (n_knob - 1 + 3)) + COST["zgemm"] * d3 / 2
        tail = (n_knob + 3) * COST["svd_complex"] * d3
        once = n_layers * COST["alternatives"] * d3
    else:
        per_layer = jac + COST["eigvals"] * d3 + COST["zgemm"] * d3 / 2
        tail, once = COST["svd_real"] * d3, 0.0
    sample = n_layers * (per_layer + COST["svd_real"] * d3) + tail
    return {"jacobian": jac, "eigvals": COST["eigvals"] * d3, "sample": sample, "run": once}


def plan(d_model: int, n_layers: int, n_available: int, macs: float | None = None, budget_s: float = DEFAULT_BUDGET_S,
         max_samples: int = MAX_SAMPLES, n_knob: int = len(KNOB), device: str = "cpu") -> Plan:
    """The rule: how many samples (and which layers) one run's analysis takes within a budget.

    The cost of one sample is estimated from the shape alone (:func:`costs`, constants measured on
    the course's build machine; the decompositions run in LAPACK on the CPU whatever device holds
    the model), so the plan is the same on every machine:

    * if the run's fixed cost and one sample fit the budget, ``n = min(max_samples, n_available,
      ⌊(budget - fixed) / per sample⌋)`` samples evenly spaced over the N, every measure at every
      layer (a **full** plan);
    * otherwise (a wide model on a CPU: one full sample of the 8B shape is hours of LAPACK): one
      sample, and the eigenvalues and symmetric shares of as many evenly spaced layers as the
      budget holds (the first layer first); no products, so S3 and S4 are not run; none at all if
      not one layer fits.

    Parameters
    ----------
    d_model, n_layers : int
    n_available : int
        Samples in the run (N).
    macs : float or None
        :func:`macs_per_token` of one layer (default: a Llama layer with ``d_ff = 4 d``).
    budget_s : float
        Estimated seconds of one core for the run (default :data:`DEFAULT_BUDGET_S`).
    max_samples : int
    n_knob : int
        Values of the Schur knob (0: no Schur forms, knob or S2 candidates).
    device : str
        Where the Jacobians are computed: on ``"cuda"`` their cost is taken as a hundredth of the
        CPU's (the decompositions stay on the CPU).

    Returns
    -------
    Plan

    Raises
    ------
    ValueError
        Non-positive sizes or budget.
    """
    for name, v in (("d_model", d_model), ("n_layers", n_layers), ("n_available", n_available),
                    ("max_samples", max_samples)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")
    if not (isinstance(budget_s, (int, float)) and budget_s > 0):
        raise ValueError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
    d, L = int(d_model), int(n_layers)
    macs = float(macs) if macs is not None else float(4 * d * d + 12 * d * d)
    c = costs(d, L, macs / (100.0 if str(device).startswith("cuda") else 1.0), n_knob)
    per, once = c["sample"], c["run"]
    n = int(min(max_samples, n_available, (budget_s - once) // per)) if budget_s > once else 0
    what = "every measure" if n_knob else "the eigenvalues, symmetric shares and end-to-end products"
    if n >= 1:
        samples = tuple(int(i) for i in np.unique(np.linspace(0, n_available - 1, n).round().astype(int)))
        text = (f"The rule (a budget of {budget_s:.0f} s of one CPU core per model; about {per + once:.0f} s for the "
                f"first sample at width {d} × {L} layers, {per:.0f} s for each further one) takes {len(samples)} of "
                f"the {n_available} samples, evenly spaced, with {what} at every layer.")
        return Plan(samples, tuple(range(L)), True, float(per), float(budget_s), text)
    per_layer = c["jacobian"] + c["eigvals"]
    k = int(min(L, budget_s // per_layer))
    layers = tuple(int(i) for i in np.unique(np.linspace(0, L - 1, k).round().astype(int))) if k else ()
    head = (f"One sample with {what} at width {d} × {L} layers costs about {(per + once) / 60:.0f} min of one CPU "
            f"core (LAPACK on {d} × {d} matrices at every layer), over this run's budget of {budget_s:.0f} s. ")
    if layers:
        text = (head + f"The rule takes one sample and the eigenvalues of {len(layers)} of the {L} layers "
                f"({', '.join(map(str, layers))}); the end-to-end products (S3) and the Schur knob (S4) are not run.")
    else:
        text = head + f"Not even one layer fits (about {per_layer:.0f} s each): nothing is computed for this run."
    text += " Raise the budget (jacobians.analyse(run, budget_s=...)) where there is time."
    return Plan((0,) if layers else (), layers, False, float(per), float(budget_s), text)


# --------------------------------------------------------------------------- one run's analysis


@dataclass(frozen=True)
class Result:
    """The layer Jacobians of one run, reduced to what S1–S4 read (:func:`analyse`).

    ``n`` samples (``plan.samples``), ``L`` layers, width ``d``, ``K`` knob values. What was not
    computed (layers outside ``plan.layers``; the products in a plan that is not ``full``; the
    Schur forms, knob and S2 candidates without a knob) is NaN.

    Attributes
    ----------
    label : str
        The run's label.
    plan : Plan
    position : int
        The token: -1 for each sample's last, else a token index (a shorter sample is read at its last).
    knob : ndarray of shape (K,)
        Empty when the Schur knob was not computed.
    eigvals : ndarray of shape (n, L, d), complex128
        Eigenvalues of each ``J_l`` (in the primary order of :data:`ORDERINGS` where the Schur form
        was computed).
    align : ndarray of shape (n, L, 5)
        The self-alignment candidates (:data:`ALIGNMENTS`, in that order); the singular-vector and
        eigenvector ones on the first sample only.
    write_rms : ndarray of shape (n, L)
        ``‖J_l - I‖_F / √d``: the size of the layer's write against the skip's identity (whose
        value is 1 on this scale).
    henrici : ndarray of shape (n, L)
        ``‖N‖_F / ‖T‖_F`` of each layer's Schur form (:func:`henrici`).
    partial : ndarray of shape (n, L, 3)
        Effective ranks (:data:`RANKS`, in that order) of the partial products ``J_l ⋯ J_0``.
    knob_ranks : ndarray of shape (n, K, 3)
        Effective ranks of the end-to-end product with each layer rebuilt as ``Z (D + c N) Zᴴ``.
    lapack_ranks : ndarray of shape (n, K, 3)
        The same with the Schur forms in LAPACK's order (c = 0, 1, 2 only; NaN elsewhere).
    random_ranks, skipless_ranks : ndarray of shape (n, 3)
        The end-to-end product with each ``N`` replaced by a random one of the same norm, and the
        product of the ``J_l - I``.
    end_sv : ndarray of shape (n, d)
        Singular values of the end-to-end product ``P = J_{L-1} ⋯ J_0``, descending.
    knob_check : float
        Largest ``‖Z T Zᴴ - J‖_F / ‖J‖_F`` over the samples' first layers: how exactly ``c = 1``
        gives ``J`` back (NaN without a knob).
    seconds : float
        Wall time of the computation.
    """

    label: str
    plan: Plan
    position: int
    knob: np.ndarray
    eigvals: np.ndarray
    align: np.ndarray
    write_rms: np.ndarray
    henrici: np.ndarray
    partial: np.ndarray
    knob_ranks: np.ndarray
    lapack_ranks: np.ndarray
    random_ranks: np.ndarray
    skipless_ranks: np.ndarray
    end_sv: np.ndarray
    knob_check: float
    seconds: float

    @property
    def n_samples(self) -> int:
        return len(self.plan.samples)

    @property
    def n_layers(self) -> int:
        return self.eigvals.shape[1]

    @property
    def d_model(self) -> int:
        return self.eigvals.shape[2]

    @property
    def layers(self) -> np.ndarray:
        """The layers with eigenvalues, ``(k,)``."""
        return np.asarray(self.plan.layers, dtype=int)

    @property
    def has_products(self) -> bool:
        """The end-to-end products were computed (S3)."""
        return bool(self.n_samples) and bool(np.isfinite(self.end_sv).all())

    @property
    def has_knob(self) -> bool:
        """The Schur knob was computed (S4)."""
        return self.has_products and self.knob.size > 0 and bool(np.isfinite(self.knob_ranks).all())

    def share(self, min_angle: float = 0.0) -> np.ndarray:
        """S1: the complex share of each layer's eigenvalues, mean over samples, ``(L,)`` (NaN: not computed)."""
        out = np.full(self.n_layers, np.nan)
        if self.n_samples and self.plan.layers:
            out[self.layers] = np.asarray(complex_share(self.eigvals[:, self.layers], min_angle)).reshape(
                self.n_samples, -1).mean(0)
        return out

    def angles(self) -> np.ndarray:
        """``|arg λ|`` of every eigenvalue of the computed layers, radians, ``(n, k, d)``."""
        return np.abs(np.angle(self.eigvals[:, self.layers]))

    def alignment(self, kind: str = "symmetric share of J − I") -> np.ndarray:
        """S2: one self-alignment candidate per layer, mean over the samples that have it, ``(L,)``."""
        if kind not in ALIGNMENTS:
            raise ValueError(f"kind must be one of {list(ALIGNMENTS)}, got {kind!r}")
        a = self.align[..., list(ALIGNMENTS).index(kind)]
        if not a.size:
            return np.full(self.n_layers, np.nan)
        with _quiet():
            return np.nanmean(a, 0)

    def rank(self, which: str = "end", kind: str = "entropy", c: float = 1.0, order: str = "modulus") -> np.ndarray:
        """Effective ranks per sample, ``(n,)``.

        Parameters
        ----------
        which : {"end", "random", "skipless"}
            The end-to-end product with the knob at ``c`` (in ``order``), with a random non-normal
            part, or without the skip.
        kind : one of :data:`RANKS`
        c : float
            A knob value (``c = 1``: the product itself).
        order : one of :data:`ORDERINGS`
        """
        if kind not in RANKS:
            raise ValueError(f"kind must be one of {list(RANKS)}, got {kind!r}")
        i = list(RANKS).index(kind)
        if which == "random":
            return self.random_ranks[:, i]
        if which == "skipless":
            return self.skipless_ranks[:, i]
        if which != "end":
            raise ValueError(f"which must be 'end', 'random' or 'skipless', got {which!r}")
        if order not in ORDERINGS:
            raise ValueError(f"order must be one of {list(ORDERINGS)}, got {order!r}")
        if c == 1.0:
            return self.partial[:, -1, i]
        hit = np.flatnonzero(np.isclose(self.knob, c))
        if not hit.size:
            raise ValueError(f"c = {c} is not among the knob values {self.knob.tolist()}")
        return (self.knob_ranks if order == "modulus" else self.lapack_ranks)[:, hit[0], i]


class _quiet:
    """Silence numpy's warnings about all-NaN slices (columns not computed are expected here)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _schur_pair(j: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The complex Schur form in LAPACK's order and in the primary order, from one decomposition."""
    import scipy.linalg as sl

    t, z = sl.rsf2csf(*sl.schur(j, output="real"))
    return (np.triu(t), np.array(z)), _sorted_schur(t, z)


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` through torch's BLAS (:func:`tdcourse.blas.matmul`): with OpenBLAS's generic
    kernel (``OPENBLAS_CORETYPE=Prescott``) one SmolLM2 run's analysis took 122 s through numpy
    and takes 79 s so; 56-57 s either way with its Haswell kernel."""
    from .blas import matmul

    return matmul(a, b)


def _eigvals(a: np.ndarray) -> np.ndarray:
    """``np.linalg.eigvals(a)`` through torch (:func:`tdcourse.blas.eigvals`): kernel-independent,
    as :func:`_mm`."""
    from .blas import eigvals

    return eigvals(a)


def _upper_times(u: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``u @ b`` for an upper-triangular complex ``u`` (:func:`_mm`: a full product through
    torch is faster than BLAS ztrmm's half of one under OpenBLAS's generic kernel, and 11 ms
    slower under its Haswell kernel)."""
    return _mm(u, b)


def _ranks(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The three effective ranks of a matrix (in :data:`RANKS`' order), and its singular values."""
    s = np.linalg.svd(m, compute_uv=False)
    return np.array([effective_rank(s, k) for k in RANKS]), s


def sample_input_ids(run, tokenizer) -> list[list[int]]:
    """The token ids of ``run``'s samples, rebuilt from its recipe and checked against the capture.

    Parameters
    ----------
    run : Activations
    tokenizer : the model's tokenizer

    Returns
    -------
    list of list of int, length N

    Raises
    ------
    ValueError
        The run has no recipe, or the rebuilt ids differ from those the capture was made from
        (another tokenizer or data): the Jacobians would be taken on other tokens.
    """
    from .store import ids_digest as _ids_digest
    from .data import SampleRecipe, build_samples

    recipe = run.meta.get("recipe")
    if not recipe:
        raise ValueError("run.meta has no sample recipe: pass the samples' input_ids yourself")
    ids = build_samples(tokenizer, SampleRecipe(**recipe)).input_ids
    want = run.meta.get("input_ids_sha256")
    if want and _ids_digest(ids) != want:
        raise ValueError("The samples rebuilt with this tokenizer differ from the ones the capture was made from "
                         "(another tokenizer or data version): the Jacobians would not belong to the captured states.")
    return ids


def _check_knob(knob) -> tuple:
    knob = tuple(float(c) for c in knob)
    if knob and not {0.0, 1.0, 2.0} <= set(knob):
        raise ValueError(f"knob must include 0, 1 and 2 (the sequel's three settings), or be empty; got {knob}")
    if any(not np.isfinite(c) for c in knob):
        raise ValueError(f"knob values must be finite, got {knob}")
    return tuple(sorted(set(knob)))


def analyse(run, model=None, tokenizer=None, budget_s: float = DEFAULT_BUDGET_S, position: int = -1,
            knob: Sequence[float] = KNOB, seed: int = 0, progress: bool = False) -> Result:
    """Layer Jacobians of the model behind ``run`` on a planned subsample, reduced to S1–S4.

    For each sample of :func:`plan` and each layer: ``J_l`` (:func:`layer_jacobians`, float64),
    its Schur form in both :data:`ORDERINGS` (its diagonal holds the eigenvalues: S1), the
    self-alignment candidates (S2), the running end-to-end product ``P_l = J_l P_{l-1}`` and the
    effective ranks of each (S3), and the products of the layers rebuilt with the Schur knob,
    with a random non-normal part of the same norm, and without the skip (S4). Only the singular
    values of each product are needed and ``svdvals(Z_{L-1} M) = svdvals(M)``, so each is carried
    as ``M ← T_l(c) (Z_lᴴ Z_{l-1}) M``.

    Parameters
    ----------
    run : Activations
        The capture (its ``meta`` names the model and the samples).
    model, tokenizer : optional
        The model that produced ``run``. When None, a result kept from an earlier call on the same
        capture with the same settings is returned (``capture.load_result``; exported with the
        capture); otherwise the model is loaded from ``run.meta``, freed before this returns, and
        the result is kept.
    budget_s : float
        The run's budget for :func:`plan` (estimated seconds of one CPU core).
    position : int
        ``-1``: each sample's last token (the capture's); ``p >= 0``: token ``p`` (a sample of at
        most ``p`` tokens is read at its last).
    knob : sequence of float
        Values of ``c`` (including 0, 1 and 2), or empty: no Schur forms, no knob and no S2
        candidates beyond the symmetric shares (the samples are still those of the full plan).
    seed : int
        Seed of the random non-normal parts.
    progress : bool
        Print a line per sample.

    Returns
    -------
    Result

    Raises
    ------
    ValueError
        Bad arguments, or a model that did not produce ``run``.
    tdcourse.models.ModelLoadError
        The model cannot be loaded here and no kept result exists.
    tdcourse.models.UnsupportedModelError
        Not a Llama-family model.
    """
    from .capture import check_acts, load_result, save_result
    from .models import ModelLoadError, decoder_layers

    knob = _check_knob(knob)
    if isinstance(position, bool) or int(position) != position or position < -1:
        raise ValueError(f"position must be -1 (each sample's last token) or a token index >= 0, got {position!r}")
    if not (isinstance(budget_s, (int, float)) and budget_s > 0):
        raise ValueError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
    check_acts(run.acts, name="run.acts")
    if model is None or tokenizer is None:
        name = _result_name(budget_s, position, knob, seed)
        kept = load_result(run.meta, name) if run.meta.get("model") else None
        if kept is not None:
            return _from_arrays(*kept)
        from .perturb import _free_memory, model_for

        try:
            model, tokenizer = model_for(run)
        except (ModelLoadError, ValueError) as err:
            raise ModelLoadError(
                f"{err} The Jacobians need the model itself, and no kept result of them exists for this capture "
                "here: run this chapter where the model loads, then export the captures (python -m tdcourse "
                "export) and import them here; the export carries the kept results.") from err
        try:
            result = analyse(run, model, tokenizer, budget_s=budget_s, position=position, knob=knob, seed=seed,
                             progress=progress)
        finally:
            del model
            _free_memory()
        if run.meta.get("model"):
            save_result(run.meta, name, *_to_arrays(result))
        return result
    check_family(model)
    L = len(decoder_layers(model))
    d = int(model.config.hidden_size)
    if L != run.n_layers or d != run.d_model:
        raise ValueError(f"the model ({L} layers, d_model {d}) did not produce this run ({run.n_layers} layers, "
                         f"d_model {run.d_model})")
    device = str(next(model.parameters()).device)
    pl = plan(d, L, run.acts.shape[0], macs=macs_per_token(model.config), budget_s=budget_s, device=device)
    ids_all = sample_input_ids(run, tokenizer) if pl.samples else []
    return analyse_prompts(model, [ids_all[s] for s in pl.samples], pl, label=run.label, position=position, knob=knob,
                           seed=seed, captured=run.acts[list(pl.samples)] if pl.samples else None, progress=progress)


def kept_result(run, budget_s: float = DEFAULT_BUDGET_S, position: int = -1, knob: Sequence[float] = KNOB,
                seed: int = 0) -> Result | None:
    """:func:`analyse`'s result for ``run`` if it is kept in the cache (computed by an earlier call,
    e.g. the scoreboard's), else None; never loads a model or computes.

    Parameters
    ----------
    run : Activations
    budget_s, position, knob, seed : as for :func:`analyse`

    Returns
    -------
    Result or None
    """
    from .capture import load_result

    if not run.meta.get("model"):
        return None
    kept = load_result(run.meta, _result_name(budget_s, position, _check_knob(knob), seed))
    return _from_arrays(*kept) if kept is not None else None


def quantized_run(model: str, n: int, recipe=None):
    """The cached capture of ``model``'s 4-bit NF4 copy on ``n`` samples, without capturing.

    Parameters
    ----------
    model : str
        As for :func:`tdcourse.capture.load_activations`.
    n : int
    recipe : SampleRecipe or None

    Returns
    -------
    (Activations or None, str)
        The run (None where no 4-bit capture is cached here) and one sentence saying which.
    """
    from dataclasses import replace

    from .capture import find_entries, read_activations
    from .data import SampleRecipe

    recipe = replace(recipe or SampleRecipe(), n=int(n))
    try:
        found = find_entries(model, recipe, init="trained", quant="4bit")
    except (OSError, ValueError) as err:  # pragma: no cover - an unreadable cache
        return None, f"No 4-bit capture could be looked up ({err})."
    if not found:
        return None, (f"No 4-bit NF4 capture of {model} with N = {n} is cached here (the book's build makes one for "
                      "SmolLM2-135M; python -m tdcourse capture --quant 4bit makes one).")
    path, meta = found[0]
    return read_activations(path, expect_meta=meta), f"The 4-bit NF4 capture {path.name} is cached."


def analyse_prompts(model, prompts: Sequence[Sequence[int]], plan_: Plan, label: str = "", position: int = -1,
                    knob: Sequence[float] = KNOB, seed: int = 0, captured: np.ndarray | None = None,
                    progress: bool = False) -> Result:
    """The computation of :func:`analyse` on given prompts (one per ``plan_.samples`` entry).

    Parameters
    ----------
    model : transformers Llama-style causal LM
    prompts : sequence of token-id lists, one per sample of ``plan_``
    plan_ : Plan
        Which layers, and whether the products and knob are computed (``plan_.full``).
    label : str
    position, knob, seed, progress : as for :func:`analyse`
    captured : ndarray of shape (n, 2 L, d), optional
        The capture's states of these samples: with ``position=-1`` the model's states must match
        them (relative 1e-3), so that the Jacobians belong to the captured trajectories.

    Returns
    -------
    Result
    """
    from threadpoolctl import threadpool_limits

    check_family(model)
    knob = _check_knob(knob)
    # One thread (BLAS, LAPACK, OpenMP): the rule's costs are one core's, and multi-threaded LAPACK on
    # a busy machine spends most of its time waiting for its own threads (10x slower here under load).
    with threadpool_limits(1):
        return _analyse_prompts(model, prompts, plan_, label, position, knob, seed, captured, progress)


def _analyse_prompts(model, prompts, plan_, label, position, knob, seed, captured, progress) -> Result:
    from .models import decoder_layers

    pl = plan_
    L = len(decoder_layers(model))
    d = int(model.config.hidden_size)
    if len(prompts) != len(pl.samples):
        raise ValueError(f"{len(prompts)} prompts for a plan of {len(pl.samples)} samples")
    if pl.layers and max(pl.layers) >= L:
        raise ValueError(f"the plan names layer {max(pl.layers)}, the model has {L}")
    if not knob and pl.full:
        pl = Plan(pl.samples, pl.layers, True, pl.seconds_per_sample, pl.budget_s,
                  pl.text.replace("every measure", "the eigenvalues, symmetric shares and end-to-end products"))
    n, K = len(pl.samples), len(knob)
    eig = np.full((n, L, d), np.nan, dtype=np.complex128)
    align = np.full((n, L, len(ALIGNMENTS)), np.nan)
    write_rms, hen = np.full((n, L), np.nan), np.full((n, L), np.nan)
    partial = np.full((n, L, 3), np.nan)
    knob_r, lap_r = np.full((n, K, 3), np.nan), np.full((n, K, 3), np.nan)
    rand_r, skip_r = np.full((n, 3), np.nan), np.full((n, 3), np.nan)
    end_sv = np.full((n, d), np.nan)
    check = np.nan
    rng = np.random.default_rng(seed)
    eye = np.eye(d)
    schur = pl.full and K > 0
    t0 = time.perf_counter()
    for si, ids in enumerate(prompts):
        ids = _check_ids(ids)
        p = len(ids) - 1 if position == -1 else min(int(position), len(ids) - 1)
        states = residual_inputs(model, ids)
        if position == -1 and captured is not None:  # the Jacobians are taken on the captured trajectory
            cap = np.asarray(captured[si, 0::2], dtype=np.float64)
            err = np.linalg.norm(states[:L, p] - cap) / np.linalg.norm(cap)
            if not err < 1e-3:
                raise ValueError(f"sample {pl.samples[si]}: the model's states differ from the capture's (relative "
                                 f"{err:.2g}): this model did not produce this run")
        prod, skipless = eye.copy(), eye.copy()
        running: dict[tuple, np.ndarray] = {}
        if schur:
            running = {("modulus", c): eye.astype(np.complex128) for c in knob if c != 1.0}
            running.update({("lapack", c): eye.astype(np.complex128) for c in (0.0, 2.0)})
            running[("random", None)] = eye.astype(np.complex128)
        z_prev = {"modulus": eye, "lapack": eye}
        for l in pl.layers:
            j = layer_jacobians(model, ids, [l], position=p, states=states)[0]
            a = j - eye
            write_rms[si, l] = np.linalg.norm(a) / np.sqrt(d)
            align[si, l, 0] = symmetric_share(a)
            align[si, l, 1] = symmetric_share(j)
            if pl.full:
                prod = _mm(j, prod)
                skipless = _mm(a, skipless)
                partial[si, l], _ = _ranks(prod)
            if not schur:
                eig[si, l] = _eigvals(j)
                continue
            (t_lap, z_lap), (t, z) = _schur_pair(j)
            eig[si, l] = np.diagonal(t)
            hen[si, l] = henrici(t)
            if l == pl.layers[0]:  # c = 1 gives J back (checked on one layer per sample: two products)
                err = float(np.linalg.norm(with_knob(t, z, 1.0) - j) / np.linalg.norm(j))
                check = err if not np.isfinite(check) else max(check, err)
            if si == 0:
                align[si, l, 2] = singular_alignment(a)
                align[si, l, 3] = singular_alignment(j)
                align[si, l, 4] = eigvec_alignment(t)
            forms = {"modulus": (t, z), "lapack": (t_lap, z_lap)}
            change = {o: _mm(zz.conj().T, z_prev[o]) for o, (_, zz) in forms.items()}
            for key, m in list(running.items()):
                if key[0] == "random":  # the same eigenvalues and Schur vectors, a random N of the same norm
                    nn = np.triu(rng.standard_normal((d, d)) + 1j * rng.standard_normal((d, d)), 1)
                    nn *= np.linalg.norm(np.triu(t, 1)) / max(np.linalg.norm(nn), 1e-300)
                    running[key] = _upper_times(np.diag(np.diagonal(t)) + nn, _mm(change["modulus"], m))
                else:
                    o, c = key
                    tt = forms[o][0]
                    running[key] = _upper_times(np.diag(np.diagonal(tt)) + c * np.triu(tt, 1), _mm(change[o], m))
            z_prev = {o: zz for o, (_, zz) in forms.items()}
        if pl.full:
            skip_r[si], _ = _ranks(skipless)
            _, end_sv[si] = _ranks(prod)
        if schur:
            for k, c in enumerate(knob):
                if c == 1.0:
                    knob_r[si, k] = lap_r[si, k] = partial[si, -1]
                    continue
                knob_r[si, k], _ = _ranks(running[("modulus", c)])
                if c in (0.0, 2.0):
                    lap_r[si, k], _ = _ranks(running[("lapack", c)])
            rand_r[si], _ = _ranks(running[("random", None)])
        if progress:
            print(f"  {label}: sample {pl.samples[si]} ({si + 1} of {n}) done after {time.perf_counter() - t0:.0f} s",
                  flush=True)
    return Result(label=label, plan=pl, position=int(position), knob=np.array(knob, dtype=float), eigvals=eig,
                  align=align, write_rms=write_rms, henrici=hen, partial=partial, knob_ranks=knob_r, lapack_ranks=lap_r,
                  random_ranks=rand_r, skipless_ranks=skip_r, end_sv=end_sv, knob_check=float(check),
                  seconds=time.perf_counter() - t0)


#: Bump when :func:`analyse` computes something else from the same inputs; kept results are also
#: keyed by this module's source text and the torch / transformers versions.
RESULT_FORMAT = 1
#: SHA-256 of this module's source as imported: kept results belong to the code that computed them.
_CODE_SHA = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
_ARRAYS = ("knob", "eigvals", "align", "write_rms", "henrici", "partial", "knob_ranks", "lapack_ranks", "random_ranks",
           "skipless_ranks", "end_sv")


def _result_name(budget_s, position, knob, seed) -> str:
    """Name of the kept result of :func:`analyse` with these settings (see ``capture.result_path``)."""
    import json

    import torch
    import transformers

    blob = json.dumps({"budget_s": float(budget_s), "position": int(position), "knob": [float(c) for c in knob],
                       "seed": int(seed), "format": RESULT_FORMAT, "code": _CODE_SHA,
                       "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__},
                      sort_keys=True)
    return f"jacobians-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


def _to_arrays(r: Result) -> tuple[dict, dict]:
    arrays = {k: np.asarray(getattr(r, k)) for k in _ARRAYS}
    p = r.plan
    info = {"label": r.label, "position": r.position, "knob_check": r.knob_check, "seconds": r.seconds,
            "plan": {"samples": list(p.samples), "layers": list(p.layers), "full": p.full,
                     "seconds_per_sample": p.seconds_per_sample, "budget_s": p.budget_s, "text": p.text}}
    return arrays, info


def _from_arrays(arrays: dict, info: dict) -> Result:
    p = info["plan"]
    pl = Plan(tuple(p["samples"]), tuple(p["layers"]), bool(p["full"]), float(p["seconds_per_sample"]),
              float(p["budget_s"]), p["text"])
    return Result(label=info["label"], plan=pl, position=int(info["position"]), knob_check=float(info["knob_check"]),
                  seconds=float(info["seconds"]), **{k: arrays[k] for k in _ARRAYS})


# --------------------------------------------------------------------------- ties to chapters 5 and 7


def rotation_tie(run, result: Result) -> dict[str, float]:
    """The eigenvalue angles of the layer Jacobians beside chapter 5's rotation counts.

    A linear map that rotates a plane by ``θ`` per layer makes a coordinate in that plane
    oscillate with ``θ / 2π`` turns per layer, so ``L × mean |θ| / 2π`` is the number of turns the
    linearised layers would give a unit over the model's depth. Chapter 5 counts the turns of
    each unit's phase portrait (activation against its change from site to site) over the ``2L``
    sites, ``|R̄|`` of the mean trajectory (:func:`tdcourse.rotations.rotation_count`). The two are
    different objects, the same unit (turns over the depth): this puts them side by side.

    Parameters
    ----------
    run : Activations
    result : Result
        From :func:`analyse` on ``run``.

    Returns
    -------
    dict
        ``median_angle_deg`` (median ``|arg λ|`` over all eigenvalues of the computed layers,
        degrees), ``mean_angle_deg``, ``turns_linear`` (``L × mean |θ| / 2π``), ``turns_per_layer``,
        ``rotation_count`` (chapter 5's ``|R̄|``, mean over units of ``R`` of the mean trajectory)
        and ``rotation_count_per_layer`` (``|R̄| / L``). NaN where nothing was computed.
    """
    from .rotations import rotation_count, unit_trajectories

    r = float(np.abs(rotation_count(unit_trajectories(run.acts, "mean")).mean()))
    L = run.n_layers
    if not result.n_samples or not result.plan.layers:
        nan = float("nan")
        return {"median_angle_deg": nan, "mean_angle_deg": nan, "turns_linear": nan, "turns_per_layer": nan,
                "rotation_count": r, "rotation_count_per_layer": r / L}
    ang = result.angles()
    mean = float(ang.mean())
    return {"median_angle_deg": float(np.degrees(np.median(ang))), "mean_angle_deg": float(np.degrees(mean)),
            "turns_linear": L * mean / (2 * np.pi), "turns_per_layer": mean / (2 * np.pi),
            "rotation_count": r, "rotation_count_per_layer": r / L}


def linear_teleport(run, flows, model=None, tokenizer=None, ks: Sequence[int] = (1, 4), seed: int = 0):
    """Chapter 7's teleports predicted by the layer Jacobians at the unperturbed state.

    For each injection layer ``l`` of ``flows`` and each displacement ``δ`` it injected (the grid
    points, and the same-norm random directions of ``perturb.flow_fields`` with seed ``seed``),
    the first-order prediction after ``k`` layers is ``P δ`` with ``P = J_{l+k-1} ⋯ J_l`` at the
    seed prompt's last token on its unperturbed trajectory. Compared with what the model did:

    * the **pull** along the displacement, ``1 - mean ⟨δ_k, δ⟩ / ‖δ‖²`` (chapter 7's
      ``1 - κ̄``, full space), measured and predicted (``⟨P δ, δ⟩ / ‖δ‖²``);
    * the **contraction ratio** ``r = mean ‖δ_k‖ / mean ‖δ‖``, measured and predicted (``‖P δ‖``).

    Parameters
    ----------
    run : Activations
    flows : tdcourse.perturb.Flows
        ``perturb.flow_fields(run)`` (kept by chapter 7).
    model, tokenizer : optional
        As for :func:`analyse` (the model is loaded from ``run.meta`` when None; the result is kept).
    ks : sequence of int
        Layers after the injection (a ``k`` past the model's end is cut to the end).
    seed : int
        The seed ``flow_fields`` drew its random directions with (its default, 0).

    Returns
    -------
    pandas.DataFrame
        One row per injection layer and ``k``: ``layer``, ``paper layer``, ``k``, ``pull`` and
        ``pull (linear)``, ``pull random`` and ``pull random (linear)``, ``r`` and ``r (linear)``,
        ``r random`` and ``r random (linear)``.
    """
    import pandas as pd

    from .capture import load_result, save_result
    from .models import ModelLoadError
    from .perturb import _free_memory, model_for, random_directions, shift_in_plane

    if flows.label != run.label:
        raise ValueError(f"flows were computed on {flows.label!r}, not on this run ({run.label!r})")
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be layers after the injection, >= 1; got {ks}")
    name = "jacteleport-" + _result_name(0.0, -1, ks, seed)[len("jacobians-"):] + f"-{flows.mode}-{flows.n_grid}"
    if model is None or tokenizer is None:
        kept = load_result(run.meta, name) if run.meta.get("model") else None
        if kept is None:
            try:
                model, tokenizer = model_for(run)
            except (ModelLoadError, ValueError) as err:
                raise ModelLoadError(f"{err} The linear prediction needs the model's Jacobians at the seed prompt; "
                                     "no kept result exists here.") from err
            try:
                table = linear_teleport(run, flows, model, tokenizer, ks=ks, seed=seed)
            finally:
                del model
                _free_memory()
            if run.meta.get("model"):
                save_result(run.meta, name, {"table": table.to_numpy(dtype=float)}, {"columns": list(table.columns)})
            return table
        arrays, info = kept
        table = pd.DataFrame(arrays["table"], columns=info["columns"])
        for col in ("layer", "paper layer", "k"):
            table[col] = table[col].astype(int)
        return table
    ids = tokenizer(flows.prompt)["input_ids"]
    states = residual_inputs(model, ids)
    L = flows.n_layers
    rows = []
    for j, l in enumerate(flows.layers):
        steps = [k for k in ks if l + k <= L] or [L - l]
        jac = layer_jacobians(model, ids, list(range(l, l + max(steps))), states=states)
        plane = flows.planes[j]
        nat = flows.natural[l]
        grid_states = (plane.inverse(flows.coords[j]) if flows.mode == "replace"
                       else shift_in_plane(plane, nat, flows.coords[j]))
        delta = grid_states - nat
        delta_r = random_directions(np.linalg.norm(delta, axis=1), run.d_model, seed=seed + j)
        p = np.eye(run.d_model)
        for k in range(1, max(steps) + 1):
            p = jac[k - 1] @ p
            if k not in steps:
                continue
            row = {"layer": l, "paper layer": flows.paper_layers[j], "k": k}
            for tag, dd, kept, dist in (("", delta, flows.kept, flows.dist),
                                        (" random", delta_r, flows.kept_random, flows.dist_random)):
                moved = dd @ p.T
                with np.errstate(invalid="ignore", divide="ignore"):
                    kappa = (moved * dd).sum(1) / (dd * dd).sum(1)
                row[f"pull{tag}"] = 1 - float(np.nanmean(kept[j, :, l + k]))
                row[f"pull{tag} (linear)"] = 1 - float(np.nanmean(kappa))
                row[f"r{tag}"] = float(dist[j, :, l + k].mean() / dist[j, :, l].mean())
                row[f"r{tag} (linear)"] = float(np.linalg.norm(moved, axis=1).mean() / np.linalg.norm(dd, axis=1).mean())
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- verdicts

_PAPER = {
    "S1": ("About 98 % of every layer Jacobian's eigenvalues are complex: each layer rotates (Llama 3.1 8B; the "
           "sequel, read via the authors' posts)."),
    "S2": ("Self-alignment, how much a layer's input and output directions coincide, rises with depth: about 0.04 "
           "at layer 2 to 0.55 at layer 29 (Llama 3.1 8B); near-symmetric at every layer at random init (the "
           "sequel, read via the authors' posts)."),
    "S3": ("The end-to-end Jacobian, the product over all layers, has an effective rank of about 6.7 of 4,096 "
           "(Llama 3.1 8B); at random init it is in the hundreds: training squeezes the channel (the sequel, read "
           "via the authors' posts)."),
    "S4": ("The squeeze comes from the non-normal part: erasing the strictly upper triangle of each layer's Schur "
           "form widens the end-to-end rank about 6x, doubling it narrows it, a random non-normal part of the same "
           "size widens it into the hundreds (the sequel, read via the authors' posts)."),
}

S1_CRITERION = (
    "Share of each layer Jacobian's eigenvalues with a non-zero imaginary part (above 1e-8 of the largest |eigenvalue|: "
    "rounding), mean over the samples. Agrees if "
    "every layer computed is within 5 points of (or above) the share of a random Gaussian matrix of the same width "
    "(Edelman-Kostlan-Shub; the sequel's 98 % at width 4096 is 0.7 points below that yardstick's 98.7 %); partly if "
    "at least half the layers are; disagrees otherwise."
)
S2_CRITERION = (
    "Self-alignment = the symmetric part's share of the energy of the layer's write, |(A + A^T)/2|^2 / |A|^2 with "
    "A = J - I, mean over the samples, per layer. Agrees if it rises with depth: Spearman rho with the layer index "
    "> 0 at p < 0.05 AND the mean over the last third of the layers exceeds the first third's by at least 0.1; "
    "partly if one of the two holds; disagrees otherwise."
)
S3_CRITERION = (
    "Effective rank (exp of the entropy of the normalised singular values) of the end-to-end product "
    "P = J_{L-1} ... J_0 in float64, median over the samples. Agrees if it is below 2 % of the width (the sequel: "
    "6.7 of 4096 = 0.16 %; random init 'in the hundreds', above 2.4 %); partly if below 5 %; disagrees otherwise."
)
S4_CRITERION = (
    "Schur knob: each layer rebuilt as Z (D + c N) Z^H (complex Schur form, eigenvalues in descending modulus), "
    "then multiplied. Agrees if erasing N widens the end-to-end product, median effective rank at c = 0 / at c = 1 "
    ">= 2, AND doubling it narrows it, c = 2 / c = 1 < 1; partly if one of the two holds; disagrees otherwise."
)

#: Default arguments of :func:`verdicts` (the chapter's primary definitions).
PRIMARY = {"min_angle": 0.0, "alignment": "symmetric share of J − I", "rank": "entropy", "order": "modulus"}


def _not_run(claim: str, criterion: str, label: str, why: str, chapter: str) -> Verdict:
    return Verdict(claim=claim, paper=_PAPER[claim], criterion=criterion, model=label, value=float("nan"),
                   uncertainty="", outcome="not run", detail=why, chapter=chapter)


def _spread(x: np.ndarray, fmt: str = ".3g") -> str:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 1:
        return f"one sample: {x[0]:{fmt}}"
    return f"{x.size} samples: {x.min():{fmt}} … {x.max():{fmt}}"


def s1_yardstick(d: int, min_angle: float = 0.0, seed: int = 0) -> float:
    """S1's random-matrix yardstick at width ``d``: :func:`ginibre_complex_share`, or, for a
    ``min_angle`` above 0, the mean share of four seeded Gaussian matrices (a simulation)."""
    if min_angle == 0:
        return float(ginibre_complex_share(d))
    rng = np.random.default_rng(seed)
    return float(np.mean([complex_share(_eigvals(rng.standard_normal((d, d))), min_angle)
                          for _ in range(4)]))


def verdicts(run, chapter: str = "", result: Result | None = None, min_angle: float = 0.0,
             alignment: str = "symmetric share of J − I", rank: str = "entropy", order: str = "modulus",
             **kwargs) -> list[Verdict]:
    """S1–S4 on one model, each with its yardstick; criteria :data:`S1_CRITERION` … :data:`S4_CRITERION`.

    Parameters
    ----------
    run : Activations
    chapter : str
    result : Result or None
        :func:`analyse` of ``run`` (computed, or read where kept, when None).
    min_angle : float
        S1: count an eigenvalue as rotating only if ``|arg λ|`` exceeds this (radians; 0: any
        non-zero imaginary part). The yardstick is computed the same way (:func:`s1_yardstick`).
    alignment : one of :data:`ALIGNMENTS`
        S2's self-alignment candidate.
    rank : one of :data:`RANKS`
        S3's and S4's effective rank.
    order : one of :data:`ORDERINGS`
        S4's eigenvalue order in the Schur form (``"lapack"``: c = 0 and 2 only).
    **kwargs
        Passed to :func:`analyse` when ``result`` is None.

    Returns
    -------
    list of Verdict
        Four, in the order S1, S2, S3, S4. ``"not run"`` (with the reason in ``detail``) where the
        plan did not compute what the claim reads.
    """
    from scipy.stats import spearmanr

    if result is None:
        result = analyse(run, **kwargs)
    if result.label != run.label:
        raise ValueError(f"the result was computed on {result.label!r}, not on this run ({run.label!r})")
    for name, value, allowed in (("alignment", alignment, ALIGNMENTS), ("rank", rank, RANKS), ("order", order, ORDERINGS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    d, label = result.d_model, run.label
    n = result.n_samples
    where = "the last token" if result.position == -1 else f"token {result.position + 1}"
    samples = f"{n} sample(s) ({', '.join(map(str, result.plan.samples))}) at {where}"
    out = []

    # S1
    crit1 = S1_CRITERION if not min_angle else S1_CRITERION.replace(
        "with a non-zero imaginary part", f"more than {np.degrees(min_angle):.3g} degrees off the real axis")
    share = result.share(min_angle)[result.layers] if n else np.array([])
    if share.size:
        g = s1_yardstick(d, min_angle)
        ok = share >= g - 0.05
        worst = int(result.layers[np.argmin(share)])
        out.append(judge("S1", _PAPER["S1"], crit1, label, float(share.min()), agrees=bool(ok.all()),
                         partly=bool(ok.mean() >= 0.5),
                         uncertainty=(f"random-matrix yardstick at width {d}: {g:.1%}; {ok.sum()} of {ok.size} layers "
                                      f"within 5 points; layer shares {share.min():.1%} (layer {worst}) … "
                                      f"{share.max():.1%}; {samples}"),
                         detail=(f"Smallest layer share; mean over layers {share.mean():.1%}. Median |angle| of the "
                                 f"eigenvalues {np.degrees(np.median(result.angles())):.1f} degrees."),
                         chapter=chapter))
    else:
        out.append(_not_run("S1", crit1, label, result.plan.text, chapter))

    # S2
    crit2 = S2_CRITERION if alignment == PRIMARY["alignment"] else (
        f"Self-alignment = {ALIGNMENTS[alignment]}; " + S2_CRITERION.split("; ", 1)[1])
    al = result.alignment(alignment)
    lay = np.flatnonzero(np.isfinite(al))
    if lay.size >= 3:
        rho, p = spearmanr(lay, al[lay])
        third = max(1, lay.size // 3)
        early, late = float(al[lay[:third]].mean()), float(al[lay[-third:]].mean())
        rises, big = bool(rho > 0 and p < 0.05), bool(late - early >= 0.1)
        n_al = int(np.isfinite(result.align[:, lay[0], list(ALIGNMENTS).index(alignment)]).sum())
        out.append(judge("S2", _PAPER["S2"], crit2, label, late - early, agrees=rises and big, partly=rises or big,
                         uncertainty=(f"Spearman rho {rho:.2f} (p = {p:.2g}) over {lay.size} layers; first third "
                                      f"{early:.3f}, last third {late:.3f}; {n_al} sample(s)"),
                         detail=(f"Last third minus first third. Range over layers {np.nanmin(al):.3f} … "
                                 f"{np.nanmax(al):.3f} (1: symmetric, 0: skew, about 0.5: a random matrix)."),
                         chapter=chapter))
    else:
        out.append(_not_run("S2", crit2, label, f"fewer than three layers computed. {result.plan.text}", chapter))

    # S3
    crit3 = S3_CRITERION if rank == "entropy" else S3_CRITERION.replace(
        "(exp of the entropy of the normalised singular values)", f"({RANKS[rank]})")
    if result.has_products:
        r = result.rank("end", rank)
        med = float(np.median(r))
        out.append(judge("S3", _PAPER["S3"], crit3, label, med, agrees=med < 0.02 * d, partly=med < 0.05 * d,
                         uncertainty=(f"{med / d:.2%} of the width {d}; {_spread(r)}; the sequel's 6.7 of 4096 is "
                                      f"0.16 %"),
                         detail=(f"Median effective rank of P over {samples}. After the first layer: "
                                 f"{np.median(result.partial[:, 0, list(RANKS).index(rank)]):.3g}; skip-less product: "
                                 f"{np.median(result.rank('skipless', rank)):.3g}."),
                         chapter=chapter))
    else:
        out.append(_not_run("S3", crit3, label, result.plan.text, chapter))

    # S4
    crit4 = S4_CRITERION
    if order != "modulus":
        crit4 = crit4.replace("eigenvalues in descending modulus", "eigenvalues in LAPACK's order")
    if rank != "entropy":
        crit4 = crit4 + f" Effective rank: {RANKS[rank]}."
    if result.has_knob:
        base = result.rank("end", rank)
        r0 = result.rank("end", rank, 0.0, order) / base
        r2 = result.rank("end", rank, 2.0, order) / base
        rr = result.rank("random", rank) / base
        m0, m2 = float(np.median(r0)), float(np.median(r2))
        out.append(judge("S4", _PAPER["S4"], crit4, label, m0, agrees=m0 >= 2 and m2 < 1, partly=m0 >= 2 or m2 < 1,
                         uncertainty=(f"c = 0 / c = 1: {_spread(r0)}; c = 2 / c = 1: {_spread(r2)}; random N of the "
                                      f"same norm / c = 1: {np.median(rr):.3g}"),
                         detail=(f"Widening when N is erased (median ratio). Effective rank at c = 1: {np.median(base):.3g}"
                                 f"; the knob's c = 1 rebuilds J to {result.knob_check:.1e} (relative)."),
                         chapter=chapter))
    else:
        out.append(_not_run("S4", crit4, label, "the Schur knob was not computed. " + result.plan.text, chapter))
    return out


# --------------------------------------------------------------------------- what we found


def findings_table(runs, results: dict):
    """Chapter 8's numbers behind the verdicts: one row per quantity, one column per model.

    Parameters
    ----------
    runs : list of Activations
    results : dict
        ``{run.label: Result}`` from :func:`analyse`.

    Returns
    -------
    pandas.DataFrame
        Column ``quantity`` and one column per model label. Rows: samples and layers computed,
        the complex share (smallest and mean over the layers) and the Ginibre yardstick, the
        primary self-alignment over the first and the last third of the layers, the end-to-end
        effective rank under each definition (median over the samples), and the knob's ratios
        to ``c = 1`` (erased, doubled, a random ``N``, no skip). NaN where not computed.
    """
    import pandas as pd

    cols = {}
    for run in runs:
        r = results[run.label]
        share = r.share()[r.layers] if r.n_samples else np.array([np.nan])
        al = r.alignment()
        lay = np.flatnonzero(np.isfinite(al))
        third = max(1, lay.size // 3)
        col = {"samples": r.n_samples, "layers computed": len(r.plan.layers),
               "complex share, smallest layer": float(np.nanmin(share)) if np.isfinite(share).any() else np.nan,
               "complex share, mean over layers": float(np.nanmean(share)) if np.isfinite(share).any() else np.nan,
               "complex share, random matrix": float(ginibre_complex_share(r.d_model)),
               "self-alignment (J − I), first third": float(al[lay[:third]].mean()) if lay.size else np.nan,
               "self-alignment (J − I), last third": float(al[lay[-third:]].mean()) if lay.size else np.nan}
        for k in RANKS:
            col[f"end-to-end rank ({k})"] = float(np.median(r.rank("end", k))) if r.has_products else np.nan
        base = r.rank("end") if r.has_knob else None
        for name, which, c in (("rank c = 0 / c = 1", "end", 0.0), ("rank c = 2 / c = 1", "end", 2.0),
                               ("rank, random N / c = 1", "random", 1.0), ("rank, no skip / c = 1", "skipless", 1.0)):
            col[name] = float(np.median(r.rank(which, c=c) / base)) if base is not None else np.nan
        cols[run.label] = col
    df = pd.DataFrame(cols)
    df.insert(0, "quantity", df.index)
    return df.reset_index(drop=True).round(3)


def _lead(found) -> list[str]:
    """One sentence per claim: the sequel's statement and our outcome on each model, a
    disagreement said plainly (use with ``verdicts.findings(..., lead=False)``)."""
    out = []
    for claim in ("S1", "S2", "S3", "S4"):
        vs = [v for v in found if v.claim == claim]
        if not vs:
            continue
        said = vs[0].paper.replace(" (the sequel, read via the authors' posts)", "").replace(
            "; the sequel, read via the authors' posts)", ")").rstrip(".")
        parts = [f"{v.outcome} on {v.model}" for v in vs]
        s = f"{claim}, the sequel (read via the authors' posts): {said}. Our verdict: {'; '.join(parts)}."
        bad = [v.model for v in vs if v.outcome == "disagrees" and "random init" not in v.model]  # a control is a control
        if bad:
            s += f" On {' and '.join(bad)} the claim does not hold: our run disagrees with the sequel."
        out.append(s)
    return out


def findings_notes(runs, found, results: dict, rotation: dict | None = None, teleport: dict | None = None) -> list[str]:
    """Chapter 8's "what we found", as sentences computed from its results.

    Parameters
    ----------
    runs : list of Activations
        The trained run first, then the random-init control (if any), then any other run (the
        4-bit copy).
    found : list of Verdict
        The chapter's verdicts (:func:`verdicts`, four per model).
    results : dict
        ``{run.label: Result}``.
    rotation : dict or None
        ``{run.label: rotation_tie(run, result)}`` (chapter 5's rotation counts beside the angles).
    teleport : dict or None
        ``{run.label: linear_teleport(run, flows)}`` (chapter 7's teleports beside the prediction).

    Returns
    -------
    list of str
        One sentence per claim with its outcome on each model (for
        ``verdicts.findings(..., lead=False)``: the claims are the sequel's, not the paper's), what
        was computed (the plan), each claim against its yardstick and the control (a disagreement
        said plainly), the other definitions where they change the outcome, the angles against
        chapter 5 and the linear prediction against chapter 7.
    """
    by = {(v.model, v.claim): v for v in found}
    trained = runs[0].label
    ctrl = next((r.label for r in runs[1:] if "random init" in r.label), None)
    r0 = results[trained]
    d = r0.d_model
    out = _lead(found) + [f"What was computed on {trained}: {r0.plan.text}"]

    def ran(label, claim):
        v = by.get((label, claim))
        return v is not None and v.outcome != "not run"

    def share_txt(label):
        r = results[label]
        s = r.share()[r.layers]
        return f"{s.min():.1%} to {s.max():.1%}"

    if ran(trained, "S1"):
        txt = (f"S1: the layers of {trained} have {share_txt(trained)} complex eigenvalues; a random Gaussian matrix "
               f"of width {d} has {float(ginibre_complex_share(d)):.1%} (the exact expectation), so the sequel's "
               "\"each layer rotates\" describes what an unstructured matrix of this size does too")
        if ctrl and ran(ctrl, "S1"):
            txt += (f". The random-init control has {share_txt(ctrl)} ({by[(ctrl, 'S1')].outcome}): the share comes "
                    "with the architecture and the width, not with training.")
        else:
            txt += "."
        if by[(trained, "S1")].outcome == "disagrees":
            txt += " Our run disagrees with the sequel's number here."
        out.append(txt)
    if rotation and trained in rotation and np.isfinite(rotation[trained]["turns_linear"]):
        t = rotation[trained]
        txt = (f"The angles: the median eigenvalue of {trained} turns by {t['median_angle_deg']:.1f} degrees per "
               f"layer, so a linear map rotating by the mean angle gives {t['turns_linear']:.1f} turns over the "
               f"{r0.n_layers} layers; chapter 5 counted {t['rotation_count']:.1f} turns of a unit's phase portrait "
               "over the sites.")
        if ctrl and ctrl in rotation and np.isfinite(rotation[ctrl]["turns_linear"]):
            c = rotation[ctrl]
            txt += (f" On the control: {c['median_angle_deg']:.1f} degrees, {c['turns_linear']:.1f} turns, against "
                    f"{c['rotation_count']:.1f} counted.")
        txt += (" A unit's portrait also turns when it zigzags from site to site, so the count is far above what "
                "the linearised layers' rotation gives" if t["rotation_count"] > 2 * t["turns_linear"] else
                " The two agree in size")
        out.append(txt + ": the eigenvalue angles do not explain the rotation counts." if t["rotation_count"] >
                   2 * t["turns_linear"] else txt + ".")
    if ran(trained, "S2"):
        v = by[(trained, "S2")]
        txt = (f"S2 (symmetric share of the write J − I): on {trained} {v.uncertainty.split('; ')[1]}, "
               f"{v.outcome}.")
        whole = results[trained].alignment("symmetric share of J")
        lay = np.flatnonzero(np.isfinite(whole))
        third = max(1, lay.size // 3)
        txt += (f" On the whole layer J (skip included) the share goes from {whole[lay[:third]].mean():.2f} in the "
                f"first third to {whole[lay[-third:]].mean():.2f} in the last")
        if ctrl and ran(ctrl, "S2"):
            rc = results[ctrl]
            cw = rc.alignment("symmetric share of J")
            cl = np.flatnonzero(np.isfinite(cw))
            wr = np.nanmean(rc.write_rms, 0)
            txt += (f", and on the control from {cw[cl[:third]].mean():.2f} to {cw[cl[-third:]].mean():.2f}, while the "
                    f"control's write shrinks from {wr[cl[0]]:.2g} to {wr[cl[-1]]:.2g} of the skip's size and its own "
                    f"symmetric share stays at {np.nanmean(rc.alignment()):.2f}, a random matrix's. On J the skip's "
                    "identity pushes the share towards 1 wherever the write is small: that reading of \"near-"
                    "symmetric at random init\" measures the size of the write, not its geometry.")
        else:
            txt += "."
        out.append(txt)
    if ran(trained, "S3"):
        v = by[(trained, "S3")]
        r = results[trained]
        txt = (f"S3: the end-to-end Jacobian of {trained} has an effective rank of {v.value:.3g} of {d} "
               f"({v.value / d:.1%}; the sequel: 0.16 % of Llama's width), {v.outcome}; its participation ratio is "
               f"{np.median(r.rank('end', 'participation')):.3g} and its stable rank "
               f"{np.median(r.rank('end', 'stable')):.3g}, so whether it is \"single digits\" depends on the "
               "definition.")
        if ctrl and ran(ctrl, "S3"):
            c3 = by[(ctrl, "S3")].value
            txt += (f" The control's entropy rank is {c3:.3g}: "
                    + ("training squeezes the channel, as the sequel says." if v.value < 0.5 * c3 else
                       "the control squeezes as much, so the squeeze comes with the architecture, not with training."
                       if c3 <= 1.5 * v.value else "the trained model is the wider one here."))
        pr = np.median(r.partial[:, :, 0], 0)
        mid = np.sqrt(pr[0] * pr[-1])
        half = int(np.argmax(pr <= mid))
        txt += (f" Layer by layer, the rank of the partial product falls from {pr[0]:.3g} after the first layer to "
                f"{pr[-1]:.3g}; half of that fall (on a log scale) has happened by layer {half}.")
        out.append(txt)
    if ran(trained, "S4"):
        r = results[trained]
        base = r.rank("end")
        med = {c: float(np.median(r.rank("end", c=c))) for c in r.knob}
        curve = ", ".join(f"c = {c:g}: {m:.3g}" for c, m in med.items())
        txt = (f"S4 on {trained}: end-to-end effective rank against the knob, {curve}. Erasing the non-normal part "
               f"widens the product {np.median(r.rank('end', c=0.0) / base):.2g}x (the sequel: about 6x) and "
               f"doubling it narrows it to {np.median(r.rank('end', c=2.0) / base):.2g}x, "
               f"{by[(trained, 'S4')].outcome}.")
        if max(med.values()) > med[0.0] * 1.05 and max(med, key=med.get) not in (0.0,):
            txt += (f" The curve is not monotonic: the widest product is at c = {max(med, key=med.get):g}, not at "
                    "c = 0.")
        txt += (f" A random non-normal part of the same norm gives {np.median(r.rank('random')):.3g}, and the product "
                f"without the skip has {np.median(r.rank('skipless')):.3g} (the sequel: \"essentially unchanged\").")
        if ctrl and ran(ctrl, "S4"):
            rc = results[ctrl]
            txt += (f" On the control the same knob gives {np.median(rc.rank('end', c=0.0) / rc.rank('end')):.2g}x "
                    f"at c = 0 and {np.median(rc.rank('end', c=2.0) / rc.rank('end')):.2g}x at c = 2 "
                    f"({by[(ctrl, 'S4')].outcome}).")
        out.append(txt)
    others = [rr.label for rr in runs[1:] if rr.label != ctrl and rr.label in results]
    for label in others:
        vs = [by[(label, c)] for c in ("S1", "S2", "S3", "S4") if (label, c) in by]
        same = [v.claim for v in vs if by.get((trained, v.claim)) and by[(trained, v.claim)].outcome == v.outcome]
        out.append(f"{label}: the same outcome as {trained} on {', '.join(same) or 'no claim'}"
                   + (f"; a different one on {', '.join(v.claim for v in vs if v.claim not in same)}."
                      if len(same) < len(vs) else "."))
    if teleport and trained in teleport and len(teleport[trained]):
        t = teleport[trained]
        one = t[t["k"] == t["k"].min()]
        size = float(np.median(np.abs(np.r_[one["pull"], one["pull random"]])))
        miss = float(np.median(np.abs(np.r_[one["pull"] - one["pull (linear)"],
                                            one["pull random"] - one["pull random (linear)"]])))
        txt = (f"Chapter 7's teleports against the Jacobians of the unperturbed seed prompt ({trained}, "
               f"{int(one['k'].iloc[0])} layer after the injection, grid points and random directions, median over the "
               f"injection layers): the pull along the displacement is {size:.3f}, and the linear prediction misses it "
               f"by {miss:.3f}.")
        seven = t[t["paper layer"] == 7]
        if len(seven):
            row = seven.iloc[-1]
            txt += (f" At the paper's layer 7, {int(row['k'])} layer{'s' if int(row['k']) > 1 else ''} on: measured "
                    f"pull {row['pull']:.2f} (linear "
                    f"{row['pull (linear)']:.2f}) for the grid, {row['pull random']:.2f} (linear "
                    f"{row['pull random (linear)']:.2f}) for random directions.")
        txt += (" There is hardly a pull to explain here (below 1 % of the displacement)." if size < 0.01 else
                " The product of Jacobians accounts for the recovery chapter 7 measured: it is the layers' linear "
                "response." if miss < 0.5 * size else
                " The miss is as large as the pull itself: the teleports are too large for the first-order map, and "
                "much of the recovery is the layers' non-linear response.")
        out.append(txt)
    return out


# --------------------------------------------------------------------------- exercises


def _tiny_llama(seed: int = 0, layers: int = 3, width: int = 32, scale: float = 4.0):
    """A seeded float64 random Llama whose layers write O(1) (weights scaled up), for the checks."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval().double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed" not in name:
                p.mul_(scale)
    model.requires_grad_(False)
    return model


def check_layer_jacobian(fn) -> bool:
    """Check a learner's ``fn(model, input_ids, layer) -> ndarray (d_model, d_model)``.

    The answer must be ``J[i, m] = ∂h_{l+1}[last]_i / ∂h_l[last]_m``: the whole layer (skip
    included) at the last token, the earlier tokens' states held fixed. Runs ``fn`` on a seeded
    float64 random Llama (width 32, 3 layers, weights scaled so that the layers' writes are as
    large as the skip) and compares with :func:`layer_jacobians`, which itself matches central
    finite differences (printed). A wrong answer is named when it looks like a usual mistake: the
    Jacobian transposed, the skip left out (``J - I``), another token. Prints one line per case;
    returns True when all pass.
    """
    import torch

    from .exercises import NOT_WRITTEN, report, unwritten

    model = _tiny_llama()
    rng = np.random.default_rng(5)
    cases = [("layer 0, 7 tokens", rng.integers(3, 64, 7).tolist(), 0),
             ("layer 2, 5 tokens", rng.integers(3, 64, 5).tolist(), 2),
             ("layer 1, one token", [int(rng.integers(3, 64))], 1)]
    results = []
    for desc, ids, layer in cases:
        want = layer_jacobians(model, ids, [layer])[0]
        f, x0, _ = last_token_map(model, ids, layer)
        fd = finite_difference_jacobian(f, x0, eps=1e-5)
        print(f"  reference = central differences to {np.abs(fd - want).max():.0e} ({desc})")
        try:
            value = fn(model, list(ids), layer)
            got = np.asarray(value, dtype=float)
        except Exception as err:  # noqa: BLE001 - a learner's bug is reported, not raised
            value = err
            if not unwritten(err):
                results.append((desc, False, f"raised {type(err).__name__}: {err}"))
                continue
        if unwritten(value):  # a template (None, ..., NotImplementedError): "Not written yet"
            results.append((desc, False, NOT_WRITTEN))
            continue
        if got.shape != want.shape:
            results.append((desc, False, f"shape {got.shape}, expected {want.shape} (d_model × d_model)"))
            continue
        scale = np.abs(want).max()
        close = lambda a, b: np.abs(a - b).max() <= 1e-4 * scale  # noqa: E731
        if close(got, want):
            results.append((desc, True, ""))
            continue
        why = "differs from the reference"
        if close(got, want.T):
            why = "it is the transpose: row i must be output unit i, column m input unit m (jacrev's layout)"
        elif close(got, want - np.eye(want.shape[0])):
            why = "it is J − I: the skip is left out (differentiate the layer's whole output, x + attn + mlp)"
        elif len(ids) > 1 and any(close(got, layer_jacobians(model, ids, [layer], position=q)[0])
                                  for q in range(len(ids) - 1)):
            why = "it is the Jacobian at another token: perturb and read the last token"
        else:
            with torch.no_grad():
                err = np.abs(got - want).max() / scale
            why += f" (largest difference {err:.2g} of the largest entry)"
        results.append((desc, False, why))
    return report(results)


def check_effective_rank(fn) -> bool:
    """Check a learner's ``fn(singular_values) -> float``: the entropy effective rank (Roy & Vetterli).

    ``exp(-Σ p_i log p_i)`` with ``p_i = σ_i / Σσ``. Rejects the usual slips: the entropy without
    the exponential, ``σ²`` in place of ``σ``, a logarithm in base 2 with a natural exponential.
    """
    from .exercises import report, run_case

    rng = np.random.default_rng(3)
    s = np.sort(rng.gamma(0.5, size=40))[::-1]
    cases = [("four equal singular values: rank 4", np.ones(4), 4.0),
             ("one non-zero singular value: rank 1", np.array([2.0, 0.0, 0.0]), 1.0),
             ("σ = (3, 1): exp of the entropy of (3/4, 1/4)", np.array([3.0, 1.0]), effective_rank(np.array([3.0, 1.0]))),
             ("a decaying spectrum of 40", s, effective_rank(s))]
    return report([run_case(desc, fn, (sv.copy(),), want, rtol=1e-6) for desc, sv, want in cases])


def check_symmetric_share(fn) -> bool:
    """Check a learner's ``fn(a) -> float``: ``‖(A + Aᵀ)/2‖_F² / ‖A‖_F²`` (S2's primary candidate).

    Cases: a symmetric matrix (1), a skew one (0), the write of a plane rotation by 60 degrees
    (``sin²(30°) = 1/4``), and a random matrix. Rejects norms that are not squared and the sum
    ``A + Aᵀ`` without the half.
    """
    from .exercises import report, run_case

    rng = np.random.default_rng(4)
    b = rng.standard_normal((6, 6))
    th = np.pi / 3
    rot = np.eye(6)
    rot[:2, :2] = [[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]
    cases = [("a symmetric matrix: 1", b + b.T, 1.0), ("a skew-symmetric matrix: 0", b - b.T, 0.0),
             ("the write R − I of a rotation by 60°: sin²(30°)", rot - np.eye(6), 0.25),
             ("a random matrix", b, symmetric_share(b))]
    return report([run_case(desc, fn, (a.copy(),), want, atol=1e-9) for desc, a, want in cases])


def check_knob(fn) -> bool:
    """Check a learner's ``fn(t, z, c) -> ndarray``: ``Z (D + c N) Zᴴ`` from a complex Schur form.

    Cases on a seeded real 8 × 8 matrix: c = 1 gives it back, c = 0 a normal matrix with the same
    eigenvalues, c = 2 the reference. Rejects ``Zᵀ`` in place of ``Zᴴ`` and scaling the whole
    ``T`` (eigenvalues included) instead of its strictly upper triangle.
    """
    from .exercises import report, run_case, unwritten

    rng = np.random.default_rng(6)
    a = rng.standard_normal((8, 8))
    t, z = schur_form(a)
    cases = [("c = 1 gives the matrix back", 1.0, a.astype(complex)), ("c = 0: the normal part", 0.0, with_knob(t, z, 0.0)),
             ("c = 2: the non-normal part doubled", 2.0, with_knob(t, z, 2.0))]

    def real_imag(c):
        def g(tt, zz):
            m = fn(tt.copy(), zz.copy(), c)
            if unwritten(m):  # a template: run_case says "not written yet"
                return m
            m = np.asarray(m, dtype=complex)
            return np.stack([m.real, m.imag])
        return g

    out = []
    for desc, c, want in cases:
        want = np.asarray(want, dtype=complex)
        out.append(run_case(desc, real_imag(c), (t, z), np.stack([want.real, want.imag]), rtol=1e-8, atol=1e-9))
    return report(out)
