"""Teleporting the residual stream: a PCA-2 grid injected as a layer's input (claim C13).

The protocol (``shared/paper.md`` section 2.8; the paper states the result only in words, the
protocol comes from a third-party reimplementation):

1. fit PCA-2 on the residual states of the N samples at ``resid_pre.l`` (the input of decoder
   layer ``l``): a :class:`Plane`;
2. lay an ``n × n`` grid over the plane, ``± extent`` standard deviations along each PC
   (:func:`grid`);
3. inverse-transform each grid point to a full ``d_model`` vector (``Plane.inverse``);
4. inject it as the input of decoder layer ``l`` at the last token of a seed prompt, replacing
   the state there (:func:`inject`, a forward pre-hook), and run the rest of the model
   (:func:`teleport`): all grid points of one layer in one batched forward pass;
5. read the later states at the last token, project them onto the same plane (the flow
   field), and measure how far they stay from the unperturbed trajectory
   (:func:`distances`, :func:`recovery_ratio`).

The control for "is the pull specific to the plane?" displaces the unperturbed state by
random directions of the same norms (:func:`random_directions`). The effect on the model's
prediction is the KL divergence of the next-token distribution (:func:`kl_divergence`).

Layer boundaries: ``b = 0 … L``; boundary ``b < L`` is ``resid_pre.b`` (input of layer ``b``)
and boundary ``L`` is ``resid_post.{L-1}``, the output of the last block (the input of the
final norm, not one of the 2L captured sites). "``k`` layers after injecting at ``l``" is
boundary ``l + k``.

Inputs follow the course's rule (:mod:`tdcourse.checks`): float32 / float64 arrays, no NaN or
inf (a NaN state injected would return NaN rows; a NaN in the states gave LinAlgError), no
float16 arrays. The smallest run that carries a verdict: :data:`MIN_SAMPLES` = 20 samples (the
PCA plane is fitted on them) and :data:`MIN_LAYERS` = 4 layers (the verdict compares the paper's
early layers 0 and 7 with its late layers 23 and 31: only from 4 layers on do they map to
distinct layers of the model). :func:`verdicts` refuses smaller runs before it computes (or
loads the model for) anything; the experiment itself (:func:`flow_fields`, a flow field to look
at) runs on any model and on 3 samples or more.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from .capture import Activations, _layer_input, check_acts, load_result, residual_hooks, save_result, site_names
from .checks import check_array, check_run_size
from .models import ModelLoadError, decoder_layers
from .stats import Interval
from .verdicts import Verdict, judge

__all__ = [
    "MIN_SAMPLES",
    "MIN_LAYERS",
    "SEED_PROMPT",
    "PAPER_LAYERS",
    "PAPER_N_LAYERS",
    "Plane",
    "Teleport",
    "Flows",
    "map_layers",
    "injection_layers",
    "VERDICT_PAPER_LAYERS",
    "fit_plane",
    "grid",
    "shift_in_plane",
    "random_directions",
    "inject",
    "teleport",
    "distances",
    "kept_fraction",
    "recovery_ratio",
    "ratio_difference",
    "kl_divergence",
    "flow_fields",
    "model_for",
    "boundary_names",
    "C13_RATIO_CRITERION",
    "C13_ARROWS_CRITERION",
    "verdicts",
    "check_inject",
    "check_recovery_ratio",
    "check_shift_in_plane",
]

SEED_PROMPT = "I'm sorry, Dave. I'm afraid I can't do that."
"""The seed prompt of the reimplementation the protocol comes from (Llama 3.1 8B there)."""

PAPER_LAYERS = (0, 7, 15, 23, 31)
"""The injection layers of the protocol, on Llama 3.1 8B's 32 layers."""

PAPER_N_LAYERS = 32


# --------------------------------------------------------------------------- the plane


def map_layers(n_layers: int, paper_layers: Sequence[int] = PAPER_LAYERS, paper_n_layers: int = PAPER_N_LAYERS) -> tuple[int, ...]:
    """The paper's layer indices mapped to a model of another depth, by relative depth.

    ``round(l * (n_layers - 1) / (paper_n_layers - 1))``: the first layer maps to the first and
    the last to the last. For SmolLM2-135M (30 layers) 0, 7, 15, 23, 31 → 0, 7, 14, 22, 29;
    for Llama 3.1 8B (32 layers) they are unchanged.

    Raises
    ------
    ValueError
        ``n_layers`` < 1 or a paper layer outside ``0 … paper_n_layers - 1``.
    """
    if n_layers < 1 or paper_n_layers < 1:
        raise ValueError(f"n_layers and paper_n_layers must be positive, got {n_layers}, {paper_n_layers}")
    pl = np.asarray(paper_layers, dtype=int)
    if pl.ndim != 1 or pl.size == 0 or pl.min() < 0 or pl.max() >= paper_n_layers:
        raise ValueError(f"paper_layers must be a non-empty list of layers in 0 … {paper_n_layers - 1}, got {list(paper_layers)}")
    scale = (n_layers - 1) / (paper_n_layers - 1) if paper_n_layers > 1 else 0.0
    return tuple(int(x) for x in np.floor(pl * scale + 0.5))


#: The paper layers the C13 verdict compares (early 0, 7 against late 23, 31).
VERDICT_PAPER_LAYERS = (0, 7, 23, 31)
#: The fewest samples (N) and layers a verdict on C13 is computed from (see the module's docstring).
MIN_SAMPLES = 20
MIN_LAYERS = 4
_ANALYSIS = "Chapter 7's teleport experiment (C13)"


def injection_layers(n_layers: int, paper_layers: Sequence[int] = PAPER_LAYERS,
                     paper_n_layers: int = PAPER_N_LAYERS) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The injection layers :func:`flow_fields` runs: :func:`map_layers` without repeats.

    On a shallow model two paper layers can map to the same layer (4 layers: 0, 7, 15, 23, 31
    → 0, 1, 1, 2, 3). Injecting twice at one layer would show the same experiment twice under
    two names, so each layer is kept once, under the paper layer the C13 verdict reads
    (:data:`VERDICT_PAPER_LAYERS`) when one of them maps there, else under the first.

    Parameters
    ----------
    n_layers : int
    paper_layers : sequence of int
        Layers on the paper's ``paper_n_layers`` scale.
    paper_n_layers : int

    Returns
    -------
    layers, paper_layers : tuple of int, tuple of int
        Same length, in the order of ``paper_layers``: the model's layers (distinct) and the
        paper layer each stands for. 4 layers: ``(0, 1, 2, 3), (0, 7, 23, 31)``; 30 layers:
        ``(0, 7, 14, 22, 29), (0, 7, 15, 23, 31)``.
    """
    mapped = map_layers(n_layers, paper_layers, paper_n_layers)
    keep: dict[int, int] = {}
    for p, l in zip(paper_layers, mapped):
        if l not in keep or (p in VERDICT_PAPER_LAYERS and keep[l] not in VERDICT_PAPER_LAYERS):
            keep[l] = int(p)
    pairs = [(l, p) for p, l in zip(paper_layers, mapped) if keep.get(l) == p]
    return tuple(l for l, _ in pairs), tuple(p for _, p in pairs)


@dataclass(frozen=True)
class Plane:
    """A PCA-2 plane of residual states.

    Attributes
    ----------
    mean : ndarray of shape (d_model,)
        The states' mean (the plane's origin).
    components : ndarray of shape (2, d_model)
        Orthonormal rows: PC1, PC2.
    std : ndarray of shape (2,)
        Standard deviation of the states along each PC (square root of the explained variance).
    explained : ndarray of shape (2,)
        Fraction of the total variance along each PC.
    """

    mean: np.ndarray
    components: np.ndarray
    std: np.ndarray
    explained: np.ndarray

    @property
    def d_model(self) -> int:
        return self.mean.shape[0]

    def _check(self, x: np.ndarray, last: int, name: str) -> np.ndarray:
        x = check_array(x, name).astype(np.float64, copy=False)
        if x.ndim < 1 or x.shape[-1] != last:
            raise ValueError(f"{name} must have shape (..., {last}), got {x.shape}")
        return x

    def project(self, states: np.ndarray) -> np.ndarray:
        """PCA coordinates of states: ``(states - mean) @ components.T``.

        Parameters
        ----------
        states : ndarray of shape (..., d_model)

        Returns
        -------
        ndarray of shape (..., 2)
        """
        x = self._check(states, self.d_model, "states")
        return (x - self.mean) @ self.components.T

    def inverse(self, coords: np.ndarray) -> np.ndarray:
        """The points of the plane at PCA coordinates ``coords``: ``mean + coords @ components``.

        Parameters
        ----------
        coords : ndarray of shape (..., 2)

        Returns
        -------
        ndarray of shape (..., d_model)
            Every direction off the plane is set to the mean's (the PCA inverse transform).
        """
        c = self._check(coords, 2, "coords")
        return self.mean + c @ self.components


def fit_plane(states: np.ndarray) -> Plane:
    """Fit PCA-2 on residual states, exactly, with the cheaper of the two eigenproblems.

    The same plane as scikit-learn's ``PCA(n_components=2)`` (exact solvers; components'
    signs fixed as scikit-learn does, the largest entry of each made positive), computed from
    the ``n × n`` Gram matrix of the centred states when ``n_samples < d_model`` and from the
    ``d × d`` covariance otherwise. For N = 1000 states of width 4096 (Llama 3.1 8B) the Gram
    route costs one ``1000 × 4096`` product and a ``1000 × 1000`` eigendecomposition (about
    0.5 s on one core) instead of a ``4096 × 4096`` one (about 20 s).

    Parameters
    ----------
    states : ndarray of shape (n_samples, d_model)
        E.g. ``run.site("resid_pre", l)``: the N samples' states at one site (n_samples >= 3).

    Returns
    -------
    Plane

    Raises
    ------
    ValueError
        Wrong shape, or the states vary in fewer than two directions (no plane to fit).
    """
    x = check_array(states, "states").astype(np.float64, copy=False)
    if x.ndim != 2 or x.shape[0] < 3 or x.shape[1] < 2:
        raise ValueError(f"states must have shape (n_samples >= 3, d_model >= 2), got {x.shape}")
    from threadpoolctl import threadpool_limits

    n, d = x.shape
    mean = x.mean(0)
    xc = x - mean
    # One BLAS thread: the problem is small, and a multi-threaded BLAS on a busy machine spends
    # seconds spinning on it.
    with threadpool_limits(1, user_api="blas"):
        if n < d:  # dual: eigenvectors u of xc xc^T give the components u^T xc / sqrt(λ)
            lam, u = np.linalg.eigh(xc @ xc.T)
            lam, u = lam[::-1][:2], u[:, ::-1][:, :2]
            with np.errstate(invalid="ignore", divide="ignore"):
                comp = (u.T @ xc) / np.sqrt(lam)[:, None]
        else:  # primal: the d × d covariance
            lam, v = np.linalg.eigh(xc.T @ xc)
            lam, comp = lam[::-1][:2], v[:, ::-1][:, :2].T
    total = np.einsum("nd,nd->", xc, xc)
    if not (lam[1] > 1e-12 * total) or not np.isfinite(comp).all():
        raise ValueError("states vary in fewer than two directions: there is no PCA plane to fit")
    # scikit-learn's sign convention (svd_flip, u_based_decision=False)
    comp = comp * np.sign(comp[np.arange(2), np.argmax(np.abs(comp), axis=1)])[:, None]
    var = lam / (n - 1)
    return Plane(mean=mean, components=comp, std=np.sqrt(var), explained=lam / total)


def grid(plane: Plane, n: int = 10, extent: float = 3.0) -> np.ndarray:
    """An ``n × n`` grid of PCA coordinates spanning ``± extent`` standard deviations per PC.

    Parameters
    ----------
    plane : Plane
    n : int
        Points per axis (>= 2).
    extent : float
        Half-width of the grid in standard deviations of the states along each PC (> 0).

    Returns
    -------
    ndarray of shape (n * n, 2)
        Row ``i * n + j`` is (PC1 value ``i``, PC2 value ``j``), in the plane's units (not in σ).
    """
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n}")
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError(f"extent must be a positive number of standard deviations, got {extent}")
    ticks = np.linspace(-extent, extent, int(n))
    g1, g2 = np.meshgrid(ticks * plane.std[0], ticks * plane.std[1], indexing="ij")
    return np.column_stack([g1.ravel(), g2.ravel()])


def shift_in_plane(plane: Plane, state: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Move one state within the plane to each of ``coords``, keeping its off-plane part.

    ``state + (coords - plane.project(state)) @ plane.components``: the projection of the result
    is ``coords``, and everything orthogonal to the plane stays the state's own (unlike
    ``plane.inverse(coords)``, which puts the mean's there).

    Parameters
    ----------
    plane : Plane
    state : ndarray of shape (d_model,)
    coords : ndarray of shape (m, 2)

    Returns
    -------
    ndarray of shape (m, d_model)
    """
    state = check_array(state, "state").astype(np.float64, copy=False)
    coords = check_array(coords, "coords").astype(np.float64, copy=False)
    if state.shape != (plane.d_model,):
        raise ValueError(f"state must have shape ({plane.d_model},), got {state.shape}")
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must have shape (m, 2), got {coords.shape}")
    return state + (coords - plane.project(state)) @ plane.components


def random_directions(norms: np.ndarray, d_model: int, seed: int = 0) -> np.ndarray:
    """Isotropic random displacement vectors with given norms (the same-norm control).

    Parameters
    ----------
    norms : ndarray of shape (m,)
        The length of each displacement (>= 0).
    d_model : int
    seed : int

    Returns
    -------
    ndarray of shape (m, d_model)
        Row ``i`` has norm ``norms[i]`` and a direction uniform on the sphere.
    """
    norms = check_array(norms, "norms").astype(np.float64, copy=False)
    if norms.ndim != 1 or (norms < 0).any() or not np.isfinite(norms).all():
        raise ValueError(f"norms must be a 1-D array of finite non-negative lengths, got shape {norms.shape}")
    if d_model < 1:
        raise ValueError(f"d_model must be positive, got {d_model}")
    u = np.random.default_rng(seed).standard_normal((norms.size, int(d_model)))
    return u / np.linalg.norm(u, axis=1, keepdims=True) * norms[:, None]


# --------------------------------------------------------------------------- the model


@contextlib.contextmanager
def inject(model, layer: int, states, position: int = -1) -> Iterator[None]:
    """Replace the residual input of decoder layer ``layer`` at token ``position``.

    A forward pre-hook on ``decoder_layers(model)[layer]`` swaps ``hidden[:, position]`` for
    ``states`` before the layer runs; every later layer sees the replaced state. Enter it
    before :func:`tdcourse.capture.residual_hooks` so that ``resid_pre.layer`` reads the
    injected state. The hook is removed on exit, also on error.

    Parameters
    ----------
    model : transformers Llama-style causal LM
    layer : int
        ``0 … n_layers - 1``.
    states : torch.Tensor or ndarray of shape (batch, d_model) or (d_model,)
        One state per batch row (a single vector is used for every row).
    position : int
        Token position to replace (default: the last).
    """
    import torch

    layers = decoder_layers(model)
    if not 0 <= int(layer) < len(layers):
        raise ValueError(f"layer {layer} is out of range: this model has layers 0 to {len(layers) - 1}")
    d_model = model.config.hidden_size
    if isinstance(states, torch.Tensor):  # in the model's own dtype (a float16 model takes float16 states)
        new = states
        if not bool(torch.isfinite(new).all()):
            raise ValueError("states holds NaN or inf: no state is injected from non-finite values")
    else:
        new = torch.as_tensor(check_array(states, "states"))
    if new.ndim not in (1, 2) or new.shape[-1] != d_model:
        raise ValueError(f"states must have shape (batch, {d_model}) or ({d_model},), got {tuple(new.shape)}")

    def hook(module, args, kwargs):
        hidden = _layer_input(args, kwargs)
        rows = new if new.ndim == 2 else new.expand(hidden.shape[0], -1)
        if rows.shape[0] != hidden.shape[0]:
            raise ValueError(f"inject: {rows.shape[0]} states for a batch of {hidden.shape[0]}")
        out = hidden.clone()
        out[:, position] = rows.to(device=hidden.device, dtype=hidden.dtype)
        if args:
            return (out, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": out}

    handle = layers[int(layer)].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@dataclass(frozen=True)
class Teleport:
    """Last-token states after an injection.

    Attributes
    ----------
    states : ndarray of shape (m, n_read, d_model), float32
        Row ``i``: the run with the ``i``-th injected state; sites ``sites``.
    sites : list of str, length n_read
        From ``resid_pre.{first layer}`` to ``resid_mid.{L-1}``, then ``resid_post.{L-1}``
        (the last block's output).
    logprobs : ndarray of shape (m, vocab_size), float32
        Next-token log-probabilities at the last token.
    """

    states: np.ndarray
    sites: list[str]
    logprobs: np.ndarray

    def boundaries(self) -> np.ndarray:
        """States at the layer boundaries read: ``resid_pre.l, …, resid_pre.{L-1}, resid_post.{L-1}``,
        shape ``(m, n_boundaries, d_model)``."""
        return self.states[:, 0::2]


def _cache_kwarg(model) -> str:
    """transformers >= 5 names the KV cache argument ``cache``; 4.x ``past_key_values``."""
    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def teleport(model, input_ids: Sequence[int], layer: int = 0, states: Any = None) -> Teleport:
    """Run a prompt with the last token's input of decoder layer ``layer`` replaced by each of ``states``.

    The prompt's prefix (all tokens but the last) runs once and its key/value cache is shared
    by every row: injecting at the last token cannot change earlier tokens (causal attention),
    so the batch only runs the last token, ``m`` rows in one forward pass.

    Parameters
    ----------
    model : transformers Llama-style causal LM
    input_ids : sequence of int, length >= 1
        One prompt, unpadded.
    layer : int
        Injection layer ``0 … n_layers - 1``; states are read from ``resid_pre.layer`` on.
    states : ndarray of shape (m, d_model), or None
        The states to inject. None: no injection, one row, the unperturbed run.

    Returns
    -------
    Teleport
    """
    import torch

    ids = [int(t) for t in input_ids]
    if len(ids) == 0:
        raise ValueError("input_ids is empty: teleport needs a prompt of at least one token")
    layers = decoder_layers(model)
    n_layers = len(layers)
    if not 0 <= int(layer) < n_layers:
        raise ValueError(f"layer {layer} is out of range: this model has layers 0 to {n_layers - 1}")
    d_model = model.config.hidden_size
    if states is not None:
        states = check_array(states, "states").astype(np.float32)
        if states.ndim != 2 or states.shape[1] != d_model or states.shape[0] == 0:
            raise ValueError(f"states must have shape (m >= 1, {d_model}), got {states.shape}")
    m = 1 if states is None else states.shape[0]
    first = 2 * int(layer)
    n_sites = 2 * n_layers
    device = next(model.parameters()).device
    base = getattr(model, "model", model)
    kw = _cache_kwarg(model)
    buf = torch.empty((m, n_sites + 1 - first, d_model), dtype=torch.float32, device=device)

    def on_state(pos, hidden):
        if pos >= first:
            buf[:, pos - first] = hidden[:, -1]

    def on_final(module, args):
        buf[:, -1] = args[0][:, -1]

    with torch.inference_mode():
        cache = None
        if len(ids) > 1:
            out = base(input_ids=torch.tensor([ids[:-1]], device=device), use_cache=True)  # no LM head
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = out.past_key_values
            cache.batch_repeat_interleave(m)
        last = torch.full((m, 1), ids[-1], dtype=torch.long, device=device)
        ctx = inject(model, layer, torch.from_numpy(states)) if states is not None else contextlib.nullcontext()
        handle = base.norm.register_forward_pre_hook(on_final)
        try:
            with ctx, residual_hooks(model, on_state):
                logits = model(input_ids=last, use_cache=True, **{kw: cache}).logits[:, -1].float()
        finally:
            handle.remove()
        logprobs = torch.log_softmax(logits, dim=-1)
    names = site_names(n_layers)[first:] + [f"resid_post.{n_layers - 1}"]
    return Teleport(states=buf.cpu().numpy(), sites=names, logprobs=logprobs.cpu().numpy())


# --------------------------------------------------------------------------- measures


def distances(perturbed: np.ndarray, natural: np.ndarray) -> np.ndarray:
    """Euclidean distance of each perturbed trajectory to the unperturbed one, point by point.

    Parameters
    ----------
    perturbed : ndarray of shape (m, K, dim)
        ``m`` trajectories over ``K`` steps (full states, or PCA coordinates with dim = 2).
    natural : ndarray of shape (K, dim)

    Returns
    -------
    ndarray of shape (m, K)
    """
    p = check_array(perturbed, "perturbed").astype(np.float64, copy=False)
    q = check_array(natural, "natural").astype(np.float64, copy=False)
    if p.ndim != 3 or q.shape != p.shape[1:]:
        raise ValueError(f"perturbed must have shape (m, K, dim) and natural (K, dim); got {p.shape} and {q.shape}")
    return np.linalg.norm(p - q, axis=-1)


def kept_fraction(perturbed: np.ndarray, natural: np.ndarray) -> np.ndarray:
    """How much of the initial displacement is left *along its own direction* at each step.

    With displacements ``δ_k = perturbed[:, k] - natural[k]``, returns
    ``⟨δ_k, δ_0⟩ / ‖δ_0‖²``: 1 if the displacement is carried along unchanged, < 1 if the
    dynamics push the state back toward the unperturbed one (an inward arrow), > 1 if they push
    it further out. What the layers write orthogonally to ``δ_0`` does not count, unlike in
    :func:`distances`.

    Parameters
    ----------
    perturbed : ndarray of shape (m, K, dim)
    natural : ndarray of shape (K, dim)

    Returns
    -------
    ndarray of shape (m, K)
        Column 0 is 1 (NaN where ``δ_0 = 0``).
    """
    p = check_array(perturbed, "perturbed").astype(np.float64, copy=False)
    q = check_array(natural, "natural").astype(np.float64, copy=False)
    if p.ndim != 3 or q.shape != p.shape[1:]:
        raise ValueError(f"perturbed must have shape (m, K, dim) and natural (K, dim); got {p.shape} and {q.shape}")
    delta = p - q
    d0 = delta[:, :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (delta * d0).sum(-1) / (d0 * d0).sum(-1)


def _ratio_of_means(dist: np.ndarray, k: int) -> np.ndarray:
    """Ratio of means along the last-but-one axis: (..., m, K) -> (...)."""
    return dist[..., k].mean(-1) / dist[..., 0].mean(-1)


def _check_dist(dist: np.ndarray, k: int) -> np.ndarray:
    d = check_array(dist, "dist", finite=False).astype(np.float64, copy=False)
    if d.ndim != 2 or d.shape[0] < 2:
        raise ValueError(f"dist must have shape (m >= 2, K), got {d.shape}")
    if not 1 <= int(k) < d.shape[1]:
        raise ValueError(f"k must be in 1 … {d.shape[1] - 1} (steps after the injection), got {k}")
    if np.isinf(d).any():
        raise ValueError("dist holds inf: a distance is finite (NaN only past the model's last layer)")
    if not np.isfinite(d[:, [0, int(k)]]).all():  # later steps may be NaN (past the model's last layer)
        raise ValueError(f"dist holds NaN or inf at step 0 or step k = {k}: the ratio reads them")
    if (d[:, 0] <= 0).all():
        raise ValueError("dist needs some positive initial displacement (step 0)")
    return d


def recovery_ratio(dist: np.ndarray, k: int = 1, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """How much of the initial displacement is left ``k`` steps later: < 1 contracts.

    ``mean_i dist[i, k] / mean_i dist[i, 0]`` (a ratio of means, so points injected close to
    the unperturbed state do not blow it up), with a percentile bootstrap over the ``m``
    perturbed points.

    Parameters
    ----------
    dist : ndarray of shape (m, K)
        From :func:`distances`; step 0 is the injection site.
    k : int
        Steps after the injection (1 … K-1).
    n_boot, level, seed : bootstrap settings

    Returns
    -------
    Interval
    """
    d = _check_dist(dist, k)
    idx = np.random.default_rng(seed).integers(0, d.shape[0], size=(n_boot, d.shape[0]))
    boots = _ratio_of_means(d[idx], int(k))  # (n_boot, m, K) -> (n_boot,)
    a = (1 - level) / 2
    return Interval(float(_ratio_of_means(d, int(k))), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)), level)


def ratio_difference(dist_a: np.ndarray, dist_b: np.ndarray, k: int = 1, n_boot: int = 2000,
                     level: float = 0.95, seed: int = 0) -> Interval:
    """Recovery ratio of ``a`` minus that of ``b``, bootstrapped independently.

    Parameters
    ----------
    dist_a, dist_b : ndarray of shape (m_a, K_a), (m_b, K_b)
        Two sets of distances (e.g. a late and an early injection layer).
    k : int

    Returns
    -------
    Interval
        ``ratio(a) - ratio(b)``; an interval above 0 means ``a`` keeps more of its displacement.
    """
    a = _check_dist(dist_a, k)
    b = _check_dist(dist_b, k)
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a.shape[0], size=(n_boot, a.shape[0]))
    ib = rng.integers(0, b.shape[0], size=(n_boot, b.shape[0]))
    boots = _ratio_of_means(a[ia], int(k)) - _ratio_of_means(b[ib], int(k))
    est = float(_ratio_of_means(a, int(k)) - _ratio_of_means(b, int(k)))
    q = (1 - level) / 2
    return Interval(est, float(np.quantile(boots, q)), float(np.quantile(boots, 1 - q)), level)


def kl_divergence(ref_logprobs: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
    """KL(p_ref ‖ p) in nats, from log-probabilities (how much a teleport moves the prediction).

    Parameters
    ----------
    ref_logprobs : ndarray of shape (vocab_size,)
        The unperturbed next-token log-probabilities.
    logprobs : ndarray of shape (m, vocab_size)

    Returns
    -------
    ndarray of shape (m,)
    """
    r = check_array(ref_logprobs, "ref_logprobs").astype(np.float64, copy=False)
    q = check_array(logprobs, "logprobs").astype(np.float64, copy=False)
    if r.ndim != 1 or q.ndim != 2 or q.shape[1] != r.shape[0]:
        raise ValueError(f"ref_logprobs must have shape (V,) and logprobs (m, V); got {r.shape} and {q.shape}")
    return np.exp(r) @ (r[:, None] - q.T)


# --------------------------------------------------------------------------- the chapter's run


def boundary_names(n_layers: int) -> list[str]:
    """``["resid_pre.0", …, "resid_pre.{L-1}", "resid_post.{L-1}"]``: the ``L + 1`` layer boundaries."""
    return [f"resid_pre.{l}" for l in range(n_layers)] + [f"resid_post.{n_layers - 1}"]


@dataclass(frozen=True)
class Flows:
    """The teleport experiment on one model: one PCA grid per injection layer.

    ``J`` injection layers, ``m = n_grid²`` grid points, ``B = n_layers + 1`` layer boundaries
    (:func:`boundary_names`). Arrays indexed by boundary hold NaN before the injection layer.

    Attributes
    ----------
    label : str
        The model's label (``Activations.label``).
    prompt : str
    layers : tuple of int, length J
        Injection layers of this model; ``paper_layers`` are the paper's.
    paper_layers : tuple of int, length J
    n_grid : int
    extent : float
        Grid half-width in standard deviations.
    planes : tuple of Plane, length J
        Fitted on the N samples' ``resid_pre.l``.
    coords : ndarray of shape (J, m, 2)
        Grid points (PCA units of each layer's plane).
    natural : ndarray of shape (B, d_model)
        The unperturbed seed prompt at every boundary.
    natural_pc : ndarray of shape (J, B, 2)
        The unperturbed trajectory projected onto each plane.
    moved_pc : ndarray of shape (J, m, B, 2)
        The teleported states, projected onto the plane of their injection layer.
    dist : ndarray of shape (J, m, B)
        Full-space distance of the teleported states to the unperturbed ones.
    dist_pc : ndarray of shape (J, m, B)
        The same in the plane's coordinates.
    dist_random : ndarray of shape (J, m, B)
        Full-space distance for the control: the unperturbed state moved by a random
        direction of the same norm as each grid point's displacement.
    kept, kept_pc, kept_random : ndarray of shape (J, m, B)
        :func:`kept_fraction` in the full space, in the plane, and for the control: the part of
        the initial displacement left along its own direction (< 1: an inward arrow).
    kl, kl_random : ndarray of shape (J, m)
        KL(unperturbed ‖ teleported) of the next-token distribution, grid and control.
    top1_kept, top1_kept_random : ndarray of shape (J, m), bool
        Whether the most likely next token is unchanged.
    top1 : int
        The unperturbed most likely next token id.
    mode : str
        ``"replace"`` or ``"shift"`` (see :func:`flow_fields`).
    """

    label: str
    prompt: str
    layers: tuple[int, ...]
    paper_layers: tuple[int, ...]
    n_grid: int
    extent: float
    planes: tuple[Plane, ...]
    coords: np.ndarray
    natural: np.ndarray
    natural_pc: np.ndarray
    moved_pc: np.ndarray
    dist: np.ndarray
    dist_pc: np.ndarray
    dist_random: np.ndarray
    kept: np.ndarray
    kept_pc: np.ndarray
    kept_random: np.ndarray
    kl: np.ndarray
    kl_random: np.ndarray
    top1_kept: np.ndarray
    top1_kept_random: np.ndarray
    top1: int
    mode: str = "replace"

    @property
    def n_layers(self) -> int:
        return self.natural.shape[0] - 1

    def after(self, array: np.ndarray, j: int) -> np.ndarray:
        """``array[j]`` (shape ``(m, B, …)``) from injection layer ``layers[j]`` on: ``(m, B - l, …)``,
        step 0 being the injection."""
        return array[j][:, self.layers[j]:]

    def ratio(self, j: int, k: int = 1, space: str = "full", **kw) -> Interval:
        """:func:`recovery_ratio` of injection layer ``layers[j]`` after ``k`` layers.
        ``space``: ``"full"``, ``"pca"`` or ``"random"`` (the same-norm control, full space)."""
        arr = {"full": self.dist, "pca": self.dist_pc, "random": self.dist_random}.get(space)
        if arr is None:
            raise ValueError(f"space must be 'full', 'pca' or 'random', got {space!r}")
        return recovery_ratio(self.after(arr, j), k, **kw)

    def inward(self, j: int, k: int = 1, space: str = "pca", min_pull: float = 0.0) -> Interval:
        """Fraction of grid points whose displacement shrinks along its own direction ``k`` layers
        after injection layer ``layers[j]`` (inward arrows), with a Wilson interval.
        ``space``: ``"pca"`` (the flow field's arrows), ``"full"`` or ``"random"``.
        ``min_pull`` in [0, 1): count an arrow as inward only if it shrinks by at least this
        share (kept fraction < 1 − min_pull); 0, the default, counts any shrink."""
        from .stats import proportion_ci

        arr = {"full": self.kept, "pca": self.kept_pc, "random": self.kept_random}.get(space)
        if arr is None:
            raise ValueError(f"space must be 'full', 'pca' or 'random', got {space!r}")
        after = self.after(arr, j)
        if not 1 <= k < after.shape[1]:
            raise ValueError(f"k must be in 1 … {after.shape[1] - 1} for injection layer {self.layers[j]}, got {k}")
        if not 0 <= min_pull < 1:
            raise ValueError(f"min_pull must lie in [0, 1), got {min_pull}")
        x = after[:, k]
        x = x[np.isfinite(x)]
        return proportion_ci(int((x < 1 - min_pull).sum()), x.size)

    def arrows(self, j: int, k: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """What :func:`tdcourse.plots.flow_field` draws for injection layer ``layers[j]``.

        ``k`` layers after the injection (fewer if the model ends sooner). Returns
        ``starts (m, 2)``, ``ends (m, 2)``, the unperturbed ``trajectory (k + 1, 2)`` from the
        injection site, and ``inward (m,)`` (the displacement in the plane shrank along its own
        direction).
        """
        l = self.layers[j]
        k = int(min(k, self.n_layers - l))
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return (self.coords[j], self.moved_pc[j, :, l + k], self.natural_pc[j, l:l + k + 1],
                self.kept_pc[j, :, l + k] < 1)

    def summary(self, k: int = 1):
        """One row per injection layer, ``k`` layers after it: recovery ratios (full space, plane,
        random control), inward-arrow fractions, the mean pull along the displacement
        (1 − kept fraction) and the next-token effect (median KL in nats, share of top-1 kept),
        grid vs random control. A pandas DataFrame."""
        import pandas as pd

        rows = []
        for j, l in enumerate(self.layers):
            kk = min(k, self.n_layers - l)
            # the full-space interval with the verdicts' resamples and seed (recovery_ratio's
            # defaults), so that the layer table and the verdict show the same interval
            rf = self.ratio(j, kk, "full")
            rp, rr = (self.ratio(j, kk, s, n_boot=500) for s in ("pca", "random"))  # estimates only
            rows.append({
                "paper layer": self.paper_layers[j], "layer": l, "k": kk,
                "ratio full": rf.estimate, "ratio full lo": rf.lo, "ratio full hi": rf.hi,
                "ratio plane": rp.estimate, "ratio random": rr.estimate,
                "inward plane": self.inward(j, kk, "pca").estimate, "inward full": self.inward(j, kk, "full").estimate,
                "inward random": self.inward(j, kk, "random").estimate,
                "pull": 1 - float(np.nanmean(self.kept[j, :, l + kk])),
                "pull random": 1 - float(np.nanmean(self.kept_random[j, :, l + kk])),
                "KL grid": float(np.median(self.kl[j])), "KL random": float(np.median(self.kl_random[j])),
                "top-1 kept grid": float(self.top1_kept[j].mean()), "top-1 kept random": float(self.top1_kept_random[j].mean()),
            })
        return pd.DataFrame(rows)

    def curve(self, j: int, measure: str = "kept", space: str = "full") -> np.ndarray:
        """A mean over grid points against the number of layers after injection layer ``layers[j]``.

        Parameters
        ----------
        j : int
        measure : {"kept", "ratio"}
            ``"kept"``: mean :func:`kept_fraction` (1 − the pull along the displacement);
            ``"ratio"``: the recovery ratio of means (:func:`recovery_ratio`'s estimate).
        space : {"full", "pca", "random"}

        Returns
        -------
        ndarray of shape (n_layers + 1,)
            Entry ``k`` is ``k`` layers after the injection (1 at ``k = 0``); NaN past the last layer.
        """
        src = {("kept", "full"): self.kept, ("kept", "pca"): self.kept_pc, ("kept", "random"): self.kept_random,
               ("ratio", "full"): self.dist, ("ratio", "pca"): self.dist_pc, ("ratio", "random"): self.dist_random}
        if (measure, space) not in src:
            raise ValueError(f"measure must be 'kept' or 'ratio' and space 'full', 'pca' or 'random'; got {measure!r}, {space!r}")
        after = self.after(src[(measure, space)], j)
        out = np.full(self.n_layers + 1, np.nan)
        with np.errstate(invalid="ignore"):
            out[: after.shape[1]] = np.nanmean(after, 0) if measure == "kept" else after.mean(0) / after[:, 0].mean()
        return out


def _free_memory() -> None:
    """Collect garbage and return cached GPU memory to the driver (after dropping a model)."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


#: Bump when :func:`flow_fields` computes something else from the same inputs; the kept results
#: are also keyed by this module's source text and the torch / transformers versions.
FLOWS_FORMAT = 1
_FLOW_ARRAYS = ("coords", "natural", "natural_pc", "moved_pc", "dist", "dist_pc", "dist_random", "kept", "kept_pc",
                "kept_random", "kl", "kl_random", "top1_kept", "top1_kept_random")


def _flows_name(prompt, paper_layers, n_grid, extent, mode, seed) -> str:
    """Name of the kept result of :func:`flow_fields` with these settings (see ``capture.result_path``)."""
    import hashlib
    import json
    from pathlib import Path

    import torch
    import transformers

    blob = json.dumps({"prompt": prompt, "paper_layers": [int(x) for x in paper_layers], "n_grid": int(n_grid),
                       "extent": float(extent), "mode": mode, "seed": int(seed), "format": FLOWS_FORMAT,
                       "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
                       "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__},
                      sort_keys=True)
    return f"flows-{mode}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


def _flows_to_arrays(fl: Flows) -> tuple[dict, dict]:
    arrays = {k: np.asarray(getattr(fl, k)) for k in _FLOW_ARRAYS}
    for f in ("mean", "components", "std", "explained"):
        arrays[f"plane_{f}"] = np.stack([getattr(p, f) for p in fl.planes])
    info = {"label": fl.label, "prompt": fl.prompt, "layers": list(fl.layers), "paper_layers": list(fl.paper_layers),
            "n_grid": fl.n_grid, "extent": fl.extent, "top1": fl.top1, "mode": fl.mode}
    return arrays, info


def _flows_from_arrays(arrays: dict, info: dict) -> Flows:
    planes = tuple(Plane(mean=arrays["plane_mean"][j], components=arrays["plane_components"][j],
                         std=arrays["plane_std"][j], explained=arrays["plane_explained"][j])
                   for j in range(len(info["layers"])))
    return Flows(label=info["label"], prompt=info["prompt"], layers=tuple(info["layers"]),
                 paper_layers=tuple(info["paper_layers"]), n_grid=int(info["n_grid"]), extent=float(info["extent"]),
                 planes=planes, top1=int(info["top1"]), mode=info["mode"], **{k: arrays[k] for k in _FLOW_ARRAYS})


def model_for(run: Activations):
    """Load the model that produced ``run`` (the spec in ``run.meta``): ``(model, tokenizer)``."""
    from .models import load_model

    spec = run.meta.get("model")
    if not spec:
        raise ValueError("run.meta has no model spec: pass model= and tokenizer= to flow_fields")
    return load_model(spec["name"], quant=spec["quant"], dtype=spec["dtype"], init=spec["init"], seed=spec["seed"])


def flow_fields(
    run: Activations,
    model=None,
    tokenizer=None,
    prompt: str = SEED_PROMPT,
    paper_layers: Sequence[int] = PAPER_LAYERS,
    n_grid: int = 10,
    extent: float = 3.0,
    mode: str = "replace",
    seed: int = 0,
) -> Flows:
    """The teleport experiment on the model that produced ``run``.

    For each injection layer (the paper's layers mapped by :func:`map_layers`): fit PCA-2 on
    ``run``'s states at ``resid_pre.l``, inject the ``n_grid²`` inverse-transformed grid
    points and as many same-norm random displacements of the unperturbed state, all in one
    forward pass (:func:`teleport`), and reduce to distances and projections.

    Parameters
    ----------
    run : Activations
        The N-sample capture (the planes are fitted on it; its ``meta`` names the model).
    model, tokenizer : optional
        The model that produced ``run``. When None, a result kept from an earlier call on the
        same capture with the same settings (``capture.load_result``; exported and imported
        with the capture) is returned without loading anything; otherwise the model is loaded
        from ``run.meta``, freed before this returns, and the result is kept.
    prompt : str
        The seed prompt (tokenized with the model's default special tokens).
    paper_layers : sequence of int
        Layers on the paper's 32-layer scale, mapped by :func:`injection_layers` (a model layer
        two of them map to is injected once; ``Flows.paper_layers`` lists those kept).
    n_grid, extent : grid size and half-width in standard deviations
    mode : {"replace", "shift"}
        ``"replace"`` (the protocol): inject ``plane.inverse(grid point)``, whose off-plane part
        is the N samples' mean. ``"shift"``: move the prompt's own state within the plane
        (:func:`shift_in_plane`), keeping its off-plane part.
    seed : int
        Seed of the random directions.

    Returns
    -------
    Flows
    """
    if mode not in ("replace", "shift"):
        raise ValueError(f"mode must be 'replace' (the protocol) or 'shift', got {mode!r}")
    check_acts(run.acts, name="run.acts")  # no flow field from NaN or inf (and before loading a model)
    if model is None or tokenizer is None:
        # Kept from an earlier run on this capture (or imported with it): no model needed.
        name = _flows_name(prompt, paper_layers, n_grid, extent, mode, seed)
        kept = load_result(run.meta, name) if run.meta.get("model") else None
        if kept is not None:
            return _flows_from_arrays(*kept)
        # Load the model for this call only and free it before returning, so that a chapter
        # looping over runs never holds two models (an 8B in bf16 is 16 GB).
        try:
            model, tokenizer = model_for(run)
        except (ModelLoadError, ValueError) as err:  # offline, gated, folder gone: say what to do
            raise ModelLoadError(
                f"{err} The teleport experiment runs the model itself, and no kept result of it exists for "
                "this capture here: run this chapter where the model loads, then export the captures "
                "(python -m tdcourse export) and import them here; the export carries the kept results."
            ) from err
        try:
            flows = flow_fields(run, model, tokenizer, prompt=prompt, paper_layers=paper_layers, n_grid=n_grid,
                                extent=extent, mode=mode, seed=seed)
        finally:
            del model
            _free_memory()
        if run.meta.get("model"):
            save_result(run.meta, name, *_flows_to_arrays(flows))
        return flows
    n_layers = len(decoder_layers(model))
    if n_layers != run.n_layers or model.config.hidden_size != run.d_model:
        raise ValueError(f"the model ({n_layers} layers, d_model {model.config.hidden_size}) did not produce this run "
                         f"({run.n_layers} layers, d_model {run.d_model})")
    layers, paper_layers = injection_layers(n_layers, paper_layers)
    ids = tokenizer(prompt)["input_ids"]
    nat = teleport(model, ids, 0, None)
    natural = nat.boundaries()[0].astype(np.float64)  # (B, d)
    ref = nat.logprobs[0]
    top1 = int(np.argmax(ref))
    m = int(n_grid) ** 2
    J, B = len(layers), n_layers + 1
    shape = (J, m, B)
    dist, dist_pc, dist_random = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    kept, kept_pc, kept_random = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    moved_pc = np.full(shape + (2,), np.nan)
    natural_pc = np.empty((J, B, 2))
    coords = np.empty((J, m, 2))
    kl, kl_random = np.empty((J, m)), np.empty((J, m))
    top_kept, top_kept_random = np.empty((J, m), bool), np.empty((J, m), bool)
    planes = []
    for j, l in enumerate(layers):
        plane = fit_plane(run.site("resid_pre", l))
        planes.append(plane)
        coords[j] = grid(plane, n_grid, extent)
        grid_states = (plane.inverse(coords[j]) if mode == "replace"
                       else shift_in_plane(plane, natural[l], coords[j]))  # (m, d)
        norms = np.linalg.norm(grid_states - natural[l], axis=1)
        rand_states = natural[l] + random_directions(norms, run.d_model, seed=seed + j)
        out = teleport(model, ids, l, np.concatenate([grid_states, rand_states]))
        # (2m, B - l, d) float32, a view of the pass's states: each measure below upcasts the half
        # it reads to float64 itself (the same values as one float64 copy of the whole, which held
        # 1 GiB more at the 70B's shape)
        traj = out.boundaries()
        dist[j, :, l:] = distances(traj[:m], natural[l:])
        dist_random[j, :, l:] = distances(traj[m:], natural[l:])
        natural_pc[j] = plane.project(natural)
        moved_pc[j, :, l:] = plane.project(traj[:m])
        dist_pc[j, :, l:] = distances(moved_pc[j, :, l:], natural_pc[j, l:])
        kept[j, :, l:] = kept_fraction(traj[:m], natural[l:])
        kept_random[j, :, l:] = kept_fraction(traj[m:], natural[l:])
        kept_pc[j, :, l:] = kept_fraction(moved_pc[j, :, l:], natural_pc[j, l:])
        kls = kl_divergence(ref, out.logprobs)
        kl[j], kl_random[j] = kls[:m], kls[m:]
        top = out.logprobs.argmax(1) == top1
        top_kept[j], top_kept_random[j] = top[:m], top[m:]
        del out, traj  # before the next layer's pass allocates its own states
    return Flows(label=run.label, prompt=prompt, layers=layers, paper_layers=tuple(int(x) for x in paper_layers),
                 n_grid=int(n_grid), extent=float(extent), planes=tuple(planes), coords=coords, natural=natural,
                 natural_pc=natural_pc, moved_pc=moved_pc, dist=dist, dist_pc=dist_pc, dist_random=dist_random,
                 kept=kept, kept_pc=kept_pc, kept_random=kept_random, kl=kl, kl_random=kl_random,
                 top1_kept=top_kept, top1_kept_random=top_kept_random, top1=top1, mode=mode)


# --------------------------------------------------------------------------- verdict

_PAPER_C13 = ("After a PCA-grid teleport into the lower layers, states flow back toward the unperturbed "
              "trajectory (attractor-like); the pull is weaker in later layers.")

C13_RATIO_CRITERION = (
    "Contraction: r_l = mean full-space distance to the unperturbed state k layers after injecting at layer l / "
    "mean initial displacement, over the grid points (95 % bootstrap CI over points). Agrees if r_l's CI lies "
    "below 1 at both early layers (paper's 0 and 7) AND the late layers (paper's 23 and 31) keep more: "
    "mean late r − mean early r > 0 with its CI above 0. Partly if only one of the two holds."
)

C13_ARROWS_CRITERION = (
    "Inward arrows: the fraction of grid points whose displacement in the PCA plane shrinks along its own "
    "direction k layers after injection (kept fraction < 1), 95 % Wilson CI. Agrees if it lies above 1/2 at "
    "both early layers (paper's 0 and 7) AND it is lower at the late layers (paper's 23 and 31): mean early "
    "fraction − mean late fraction > 0 with its bootstrap CI above 0. Partly if only one of the two holds."
)


def _boot_stat(values: np.ndarray, stat, n_boot: int, rng) -> np.ndarray:
    """``stat`` over bootstrap resamples of the rows of ``values`` (m, ...) -> (n_boot,)."""
    idx = rng.integers(0, values.shape[0], size=(n_boot, values.shape[0]))
    return stat(values[idx])


def _early_late(flows: Flows, late: Sequence[int] = (23, 31)) -> tuple[list[int], list[int]]:
    pl = list(flows.paper_layers)
    missing = [p for p in (0, 7, *late) if p not in pl]
    if missing:
        raise ValueError(f"C13 compares the paper's layers 0, 7 with {', '.join(map(str, late))}; these flows lack "
                         f"paper layers {missing} (a model needs at least 4 layers for the four to map to distinct "
                         "layers)")
    return [pl.index(0), pl.index(7)], [pl.index(p) for p in late]


#: Spaces :func:`verdicts` can read each C13 reading in (see :meth:`Flows.ratio`, :meth:`Flows.inward`).
SPACES = ("full", "pca")


def verdicts(run: Activations, chapter: str = "", flows: Flows | None = None, k: int = 1,
             n_boot: int = 2000, seed: int = 0, min_pull: float = 0.0, ratio_space: str = "full",
             arrow_space: str = "pca", late: Sequence[int] = (23, 31), **kwargs) -> list[Verdict]:
    """C13 on one model: the two readings of "states flow back toward the unperturbed trajectory".

    Parameters
    ----------
    run : Activations
    chapter : str
    flows : Flows or None
        The result of :func:`flow_fields` for ``run`` (computed, loading the model, when None).
    k : int
        Layers after the injection at which both are read (1: one layer, available at every
        injection layer including the last).
    n_boot, seed : bootstrap settings (resampling grid points)
    min_pull : float in [0, 1), default 0
        Inward arrows: count an arrow only if it shrinks by at least this share (see
        :meth:`Flows.inward`); 0 counts any shrink (the robustness page also tries 0.05).
    ratio_space : {"full", "pca"}, default "full"
        The contraction ratio's distances: in the full residual space, or in the PCA plane.
    arrow_space : {"pca", "full"}, default "pca"
        The inward arrows: in the PCA plane (the flow field drawn), or in the full space.
    late : sequence of int, default (23, 31)
        The paper's layers read as "late" (``(23,)`` leaves out the last layer, whose output
        goes to the final norm and the unembedding).
    **kwargs
        Passed to :func:`flow_fields` when ``flows`` is None.

    Returns
    -------
    list of Verdict
        Two verdicts on claim C13: the contraction ratio in the full space (``value``: mean of
        the two early layers' ratios) and the inward-arrow fraction in the PCA plane
        (``value``: mean of the two early layers' fractions). Criteria:
        :data:`C13_RATIO_CRITERION`, :data:`C13_ARROWS_CRITERION`.
    """
    if hasattr(run, "acts"):  # before flow_fields loads the model
        check_run_size(check_acts(run.acts, name="run.acts"), MIN_SAMPLES, MIN_LAYERS, _ANALYSIS)
    if flows is None:
        flows = flow_fields(run, **kwargs)
    if flows.label != run.label:
        raise ValueError(f"flows were computed on {flows.label!r}, not on this run ({run.label!r})")
    for name, value in (("ratio_space", ratio_space), ("arrow_space", arrow_space)):
        if value not in SPACES:
            raise ValueError(f"{name} must be one of {SPACES}, got {value!r}")
    late_paper = tuple(int(p) for p in late)
    if not late_paper or any(p <= 7 for p in late_paper):
        raise ValueError(f"late must name paper layers after 7 (e.g. (23, 31)), got {late!r}")
    early, late = _early_late(flows, late_paper)
    lay = flows.layers
    ratio_crit, arrows_crit = C13_RATIO_CRITERION, C13_ARROWS_CRITERION
    if late_paper != (23, 31):
        names = " and ".join(map(str, late_paper))
        ratio_crit = ratio_crit.replace("(paper's 23 and 31)", f"(paper's {names})")
        arrows_crit = arrows_crit.replace("(paper's 23 and 31)", f"(paper's {names})")
    if ratio_space == "pca":
        ratio_crit = ratio_crit.replace("mean full-space distance", "mean distance in the PCA plane")
    if arrow_space == "full":
        arrows_crit = arrows_crit.replace("displacement in the PCA plane", "displacement in the full space")
    if min_pull:
        arrows_crit = arrows_crit.replace("(kept fraction < 1)",
                                          f"by at least {min_pull:.0%} (kept fraction < {1 - min_pull:g})")
    rng = np.random.default_rng(seed)
    setting = (f"k = {k}, grid {flows.n_grid}×{flows.n_grid} over ±{flows.extent:g} SD ({flows.mode}), "
               f"seed prompt {flows.prompt!r}, layers {'/'.join(map(str, lay))} for the paper's "
               f"{'/'.join(map(str, flows.paper_layers))}.")

    # contraction ratio, full space
    r = {j: flows.ratio(j, k, ratio_space, n_boot=n_boot, seed=seed) for j in early + late}
    dist = flows.dist if ratio_space == "full" else flows.dist_pc
    boots = {j: _boot_stat(flows.after(dist, j), lambda d: _ratio_of_means(d, k), n_boot, rng) for j in early + late}
    diff = np.mean([boots[j] for j in late], 0) - np.mean([boots[j] for j in early], 0)
    e_r = float(np.mean([r[j].estimate for j in early]))
    l_r = float(np.mean([r[j].estimate for j in late]))
    lo, hi = np.quantile(diff, [0.025, 0.975])
    contracts = all(r[j].hi < 1 for j in early)
    weaker = lo > 0
    rand = {j: flows.ratio(j, k, space="random", n_boot=n_boot, seed=seed).estimate for j in early + late}
    v_ratio = judge(
        "C13", _PAPER_C13, ratio_crit, run.label, e_r, agrees=contracts and weaker, partly=contracts or weaker,
        uncertainty=("r at " + "; ".join(f"layer {lay[j]}: {r[j]}" for j in early + late)
                     + f"; late − early {l_r - e_r:.3g} [95 % CI {lo:.3g}, {hi:.3g}]"),
        detail=(f"Contraction ratio ({'full space' if ratio_space == 'full' else 'PCA plane'}). Same-norm random "
                "directions: r = "
                + ", ".join(f"{rand[j]:.3g} (layer {lay[j]})" for j in early + late) + ". " + setting),
        chapter=chapter)

    # inward arrows, PCA plane (by default)
    f = {j: flows.inward(j, k, space=arrow_space, min_pull=min_pull) for j in early + late}

    def frac(x):
        return np.mean(x < 1 - min_pull, axis=-1)

    kept = flows.kept_pc if arrow_space == "pca" else flows.kept
    boots = {j: _boot_stat(flows.after(kept, j)[:, k], frac, n_boot, rng) for j in early + late}
    diff = np.mean([boots[j] for j in early], 0) - np.mean([boots[j] for j in late], 0)
    e_f = float(np.mean([f[j].estimate for j in early]))
    l_f = float(np.mean([f[j].estimate for j in late]))
    lo, hi = np.quantile(diff, [0.025, 0.975])
    inward = all(f[j].lo > 0.5 for j in early)
    weaker = lo > 0
    pull = {j: 1 - float(np.nanmean(flows.after(flows.kept, j)[:, k])) for j in early + late}
    v_arrows = judge(
        "C13", _PAPER_C13, arrows_crit, run.label, e_f, agrees=inward and weaker, partly=inward or weaker,
        uncertainty=("inward fraction at " + "; ".join(f"layer {lay[j]}: {f[j]}" for j in early + late)
                     + f"; early − late {e_f - l_f:.3g} [95 % CI {lo:.3g}, {hi:.3g}]"),
        detail=(f"Inward arrows ({'PCA plane' if arrow_space == 'pca' else 'full space'}). Mean pull along the "
                "displacement in the full space (1 − kept fraction): "
                + ", ".join(f"{pull[j]:.3g} (layer {lay[j]})" for j in early + late) + ". " + setting),
        chapter=chapter)
    return [v_ratio, v_arrows]


# --------------------------------------------------------------------------- what the chapter says


def layer_names(flows: "Flows") -> list[str]:
    """Chart labels of the injection layers: ``"<our layer> (paper <paper layer>)"``.

    Parameters
    ----------
    flows : Flows
        From :func:`flow_fields`.

    Returns
    -------
    list of str
        One label per injection layer, shallow to deep.
    """
    return [f"{l} (paper {p})" for l, p in zip(flows.layers, flows.paper_layers)]


def _run_name(label: str) -> str:
    """How a sentence names a run: "the trained model", "the random-init control", "the 4-bit copy"."""
    from .verdicts import run_label

    name = run_label(label)
    return "the trained model" if name == "trained" else f"the {name}"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _layer_words(fl: "Flows", idx: Sequence[int]) -> str:
    """``"layers 0, 7 and 14 (paper 15)"``, ``"layer 7"``; never called with an empty list."""
    from .verdicts import _and

    names = [str(fl.layers[j]) if fl.layers[j] == fl.paper_layers[j] else f"{fl.layers[j]} (paper {fl.paper_layers[j]})"
             for j in idx]
    return ("layer " if len(names) == 1 else "layers ") + _and(names)


def _where(fl: "Flows", idx: Sequence[int], none: str = "no injection layer") -> str:
    """``"at layers 0 and 7"``, or ``"at <none>"`` for an empty list (never an empty list in prose)."""
    return f"at {_layer_words(fl, idx)}" if idx else f"at {none}"


def _per_layer(fl: "Flows", texts: Sequence[str], idx: Sequence[int] | None = None) -> str:
    """``"72% at layer 0, 60% at 7 and 5% at 29 (paper 31)"``: one value per injection layer (or per
    injection layer ``idx``)."""
    from .verdicts import _and

    idx = range(len(fl.layers)) if idx is None else idx
    names = [str(fl.layers[j]) if fl.layers[j] == fl.paper_layers[j] else f"{fl.layers[j]} (paper {fl.paper_layers[j]})"
             for j in idx]
    return _and([f"{t} at {'layer ' if i == 0 else ''}{n}" for i, (t, n) in enumerate(zip(texts, names))])


def _sides(fl: "Flows", below: list[int], above: list[int], below_words: str, above_words: str,
           neither: str) -> str:
    """``"<above_words> at layers …, <below_words> at …"``, naming only the sides that hold a layer."""
    parts = [f"{w} {_where(fl, idx)}" for w, idx in ((above_words, above), (below_words, below)) if idx]
    return ", ".join(parts) if parts else neither


def _pull_at(fl: "Flows", paper_layer: int, space: str = "full", k: int = 4) -> tuple[float, int]:
    """``1 - κ̄`` after ``k`` layers (or to the model's end) at a paper layer, and that ``k``."""
    j = list(fl.paper_layers).index(paper_layer)
    k = min(k, fl.n_layers - fl.layers[j])
    return float(1 - fl.curve(j, "kept", space)[k]), k


def layer_table(flows: "Flows", k: int = 1):
    """One model's per-layer numbers, one column per injection layer (narrow enough for a phone).

    Parameters
    ----------
    flows : Flows
        From :func:`flow_fields`.
    k : int
        Layers after the injection (fewer where the model ends sooner).

    Returns
    -------
    pandas.DataFrame
        Index: the measures, in words; columns: :func:`layer_names`. Rows: the contraction ratio
        ``r`` in the full space with its 95 % bootstrap interval, in the plane and for random
        directions of the same length; the share of inward arrows in the plane, in the full
        space and for random directions; the mean pull along the displacement ``1 - κ̄`` (grid
        and random); the median KL divergence of the next token in nats (grid and random) and the
        share of runs whose most likely next token is unchanged (grid and random). Numbers are
        floats (:func:`tdcourse.verdicts.styled` shows them with 4 significant digits), the
        interval a text.
    """
    import pandas as pd

    from .verdicts import number

    s = flows.summary(k=k)
    rows = {
        "r, full space": s["ratio full"],
        "r, 95 % interval": [f"{number(a, 4)} – {number(b, 4)}" for a, b in zip(s["ratio full lo"], s["ratio full hi"])],
        "r, in the plane": s["ratio plane"],
        "r, random directions": s["ratio random"],
        "inward share, plane": s["inward plane"],
        "inward share, full space": s["inward full"],
        "inward share, random directions": s["inward random"],
        "pull 1 − κ̄, grid": s["pull"],
        "pull 1 − κ̄, random directions": s["pull random"],
        "median KL (nats), grid": s["KL grid"],
        "median KL (nats), random directions": s["KL random"],
        "top token unchanged, grid": s["top-1 kept grid"],
        "top token unchanged, random directions": s["top-1 kept random"],
    }
    cols = layer_names(flows)
    table = pd.DataFrame({c: [list(v)[i] for v in rows.values()] for i, c in enumerate(cols)}, index=list(rows),
                         dtype=object)
    return table


def _arrow_note(run_label: str, fl: "Flows", k: int) -> str:
    green, reach = [], []
    for j in range(len(fl.layers)):
        starts, ends, trajectory, inward = fl.arrows(j, k)
        green.append(float(np.mean(inward)))
        with np.errstate(invalid="ignore", divide="ignore"):
            reach.append(float(np.nanmedian(np.linalg.norm(ends - starts, axis=1)
                                             / np.linalg.norm(starts - trajectory[0], axis=1))))
    still = [j for j, r in enumerate(reach) if r < 0.1]
    s = (f"{_cap(_run_name(run_label))}, {k} layers on (fewer near the end): green arrows "
         f"{_per_layer(fl, [f'{g:.0%}' for g in green])}; the median arrow's length, as a share of its start's "
         f"distance from the unperturbed state, {_per_layer(fl, [f'{r:.0%}' for r in reach])}")
    if still:
        s += f". {_cap(_where(fl, still))} the arrows are under a tenth of that distance: the network hardly moves the points there"
    return s + "."


def _interval_words(ivs, below: str, above: str) -> tuple[list[int], list[int]]:
    lo = [j for j, iv in enumerate(ivs) if iv.hi < below]
    hi = [j for j, iv in enumerate(ivs) if iv.lo > above]
    return lo, hi


def _ratio_note(run_label: str, fl: "Flows", k: int) -> str:
    from .verdicts import number

    grid = [fl.ratio(j, min(k, fl.n_layers - fl.layers[j]), "full", n_boot=500) for j in range(len(fl.layers))]
    rand = [fl.ratio(j, min(k, fl.n_layers - fl.layers[j]), "random", n_boot=500) for j in range(len(fl.layers))]
    g_lo, g_hi = _interval_words(grid, 1, 1)
    r_lo, r_hi = _interval_words(rand, 1, 1)
    top = int(np.argmax([iv.estimate for iv in grid]))
    return (f"{_cap(_run_name(run_label))}, {k} layer{'s' if k > 1 else ''} after the teleport (where r's 95% "
            f"interval lies above or below 1): the grid displacement {_sides(fl, g_lo, g_hi, 'shrinks', 'grows', 'keeps its size within the intervals')}; random "
            f"directions of the same length {_sides(fl, r_lo, r_hi, 'shrink', 'grow', 'keep their size within the intervals')}. "
            f"The largest r is {number(grid[top].estimate)}, at "
            f"{_layer_words(fl, [top])}.")


def _inward_note(run_label: str, fl: "Flows", k: int) -> str:
    grid = [fl.inward(j, min(k, fl.n_layers - fl.layers[j]), "pca") for j in range(len(fl.layers))]
    rand = [fl.inward(j, min(k, fl.n_layers - fl.layers[j]), "random") for j in range(len(fl.layers))]
    g_lo, g_hi = _interval_words(grid, 0.5, 0.5)
    r_lo, r_hi = _interval_words(rand, 0.5, 0.5)
    return (f"{_cap(_run_name(run_label))}, {k} layer{'s' if k > 1 else ''} after the teleport (where the "
            "share's Wilson interval excludes ½): "
            + _sides(fl, g_lo, g_hi, "fewer than half", "more than half of the arrows point inward",
                     "no layer's share of inward arrows differs from ½")
            + "; for random directions (full space) "
            + _sides(fl, r_lo, r_hi, "fewer than half", "more than half", "no layer's share differs from ½") + ".")


def _kept_note(run_label: str, fl: "Flows", k: int, random_at: Sequence[int] = (7, 15)) -> str:
    from .verdicts import number

    steps = [min(k, fl.n_layers - l) for l in fl.layers]
    kept = [float(fl.curve(j, "kept", "full")[steps[j]]) for j in range(len(fl.layers))]
    pull = [j for j, x in enumerate(kept) if x < 0.9]
    push = [j for j, x in enumerate(kept) if x > 1.1]
    flat = [j for j, x in enumerate(kept) if 0.9 <= x <= 1.1]
    short = [j for j, st in enumerate(steps) if st < k]
    s = (f"{_cap(_run_name(run_label))}, {k} layers after the teleport"
         + (f" ({', '.join(f'{steps[j]} for layer {fl.layers[j]}' for j in short)}, where the model ends)" if short else "")
         + f": mean kept fraction κ̄ {_per_layer(fl, [number(x) for x in kept])}. ")
    parts = []
    if pull:
        parts.append(f"a pull builds up (κ̄ below 0.9) {_where(fl, pull)}")
    if push:
        parts.append(f"the displacement grows along its own direction (κ̄ above 1.1) {_where(fl, push)}")
    if flat:
        parts.append(f"the kept fraction stays within 0.1 of 1 {_where(fl, flat)}")
    s += _cap("; ".join(parts)) + "."
    rj = [j for j, p in enumerate(fl.paper_layers) if p in random_at]
    if rj:
        rk = [float(fl.curve(j, "kept", "random")[steps[j]]) for j in rj]
        s += f" Random directions of the same length: κ̄ {_per_layer(fl, [number(x) for x in rk], rj)}."
    return s


def _kl_note(runs, flows: dict) -> list[str]:
    from .verdicts import number

    out, trained_min = [], None
    for run in runs:
        fl = flows[run.label]
        grid = np.median(fl.kl, axis=1)
        rand = np.median(fl.kl_random, axis=1)
        kept = fl.top1_kept.mean(1)
        more = int((grid > rand).sum())
        J = len(fl.layers)
        name = _run_name(run.label)
        if trained_min is not None and grid.max() < 0.1 * trained_min:
            out.append(f"{_cap(name)}: every teleport moves the prediction by a median of at most "
                       f"{number(grid.max())} nats, under a tenth of the trained model's smallest "
                       f"({number(trained_min)}): the untrained network's output hardly depends on the state it is "
                       "given, so this chart tells nothing about a pull there.")
            continue
        s = (f"{_cap(name)}: a grid teleport moves the next-token distribution by a median of {number(grid.min())} "
             f"to {number(grid.max())} nats across the injection layers (the most likely token unchanged in "
             f"{kept.min():.0%} to {kept.max():.0%} of runs), a random direction of the same length by "
             f"{number(rand.min())} to {number(rand.max())}; the grid moves it more at {more} of {J} layers.")
        try:
            early, late = _early_late(fl)
        except ValueError:  # fewer than 4 distinct injection layers
            early = late = []
        if early and late:
            e, l = float(np.mean(grid[early])), float(np.mean(grid[late]))
            s += (" Early teleports (paper layers 0 and 7) move it "
                  + (f"less than late ones (23 and 31), {number(e)} against {number(l)} nats: consistent with the "
                     "early layers undoing part of the teleport before the output." if e < 0.5 * l else
                     f"as much as late ones (23 and 31) or more, {number(e)} against {number(l)} nats: whatever the "
                     "early layers pull back, the teleport still changes the prediction as much."))
        out.append(s)
        if trained_min is None:
            trained_min = float(grid.min())
    return out


def chart_notes(runs, flows: dict, chart: str, k: int = 1) -> list[str]:
    """What one of chapter 7's charts shows, in sentences computed from the flow fields.

    Parameters
    ----------
    runs : list of Activations
        The trained run first, then the random-init control (if any).
    flows : dict
        ``{run.label: Flows}`` from :func:`flow_fields`.
    chart : {"arrows", "ratio", "inward", "kept", "kl"}
        The flow fields (share of inward arrows and how far the points move, ``k`` layers on),
        the contraction ratio and the inward-arrow share ``k`` layers on (where the intervals lie
        against 1 and ½), the mean kept fraction after ``k`` layers (where a pull builds up), or
        the next-token KL divergence (grid against random directions, early against late layers).
    k : int
        Layers after the injection (fewer where the model ends sooner; not used by ``"kl"``).

    Returns
    -------
    list of str
        One sentence (or two) per run; numbers through :func:`tdcourse.verdicts.number`, no
        empty lists ("at no injection layer"), runs named as the book names them.

    Raises
    ------
    ValueError
        An unknown ``chart``, or ``k`` < 1.
    """
    notes = {"arrows": _arrow_note, "ratio": _ratio_note, "inward": _inward_note, "kept": _kept_note}
    if chart not in (*notes, "kl"):
        raise ValueError(f"chart must be one of {', '.join(map(repr, (*notes, 'kl')))}, got {chart!r}")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a whole number of layers >= 1, got {k}")
    if chart == "kl":
        return _kl_note(runs, flows)
    return [notes[chart](run.label, flows[run.label], int(k)) for run in runs]


def findings_table(runs, flows: dict):
    """Chapter 7's per-layer numbers behind its findings, one row per model and injection layer.

    Parameters
    ----------
    runs : list of Activations
    flows : dict
        ``{run.label: Flows}`` from :func:`flow_fields`.

    Returns
    -------
    pandas.DataFrame
        Columns: ``run`` (the book's name: trained, random-init control), ``layer`` (ours, with the
        paper's), the contraction ratio ``r`` and the share of inward arrows in the plane one layer
        after injection, the pull ``1 - κ̄`` after 4 layers (full space; fewer near the end) for
        the grid and for random directions, and the median KL divergence of the next token
        (nats). Seven short columns: it fits the page at 1280 px and scrolls inside its own box
        on a phone. Numbers unrounded (:func:`tdcourse.verdicts.styled` shows 4 significant
        digits).
    """
    import pandas as pd

    from .verdicts import run_label

    rows = []
    for run in runs:
        fl = flows[run.label]
        s1, s4 = fl.summary(k=1), fl.summary(k=4)
        for i, name in enumerate(layer_names(fl)):
            rows.append({"run": run_label(run.label), "layer": name, "r": float(s1["ratio full"].iloc[i]),
                         "inward": float(s1["inward plane"].iloc[i]), "pull after 4": float(s4["pull"].iloc[i]),
                         "pull, random": float(s4["pull random"].iloc[i]), "KL": float(s1["KL grid"].iloc[i])})
    return pd.DataFrame(rows)


def findings_notes(runs, found, flows: dict) -> list[str]:
    """Chapter 7's "what we found", as sentences computed from its flow fields.

    Parameters
    ----------
    runs : list of Activations
        The trained run first, then the random-init control (if any).
    found : list of Verdict
        The chapter's C13 verdicts (two readings per model, from :func:`verdicts`).
    flows : dict
        ``{run.label: Flows}`` from :func:`flow_fields`; must include the paper's layer 7.

    Returns
    -------
    list of str
        Early and late inward shares per model, the two readings against the paper (a
        difference between them said plainly), the size of the pull on the trained model against
        the control (read as a control: training or the architecture), and against random
        directions.
    """
    from .verdicts import number

    out = []
    for run in runs:
        s1 = flows[run.label].summary(k=1)
        early = s1[s1["paper layer"].isin([0, 7])]["inward plane"].mean()
        late = s1[s1["paper layer"].isin([23, 31])]["inward plane"].mean()
        out.append(f"{_cap(_run_name(run.label))}: inward arrows in the plane one layer after injection, mean over "
                   f"the early layers (paper 0 and 7) {early:.0%}, over the late layers (paper 23 and 31) {late:.0%}.")
    by = {(v.model, v.criterion): v for v in found}
    trained = runs[0].label
    ratio_v, arrow_v = by[(trained, C13_RATIO_CRITERION)], by[(trained, C13_ARROWS_CRITERION)]
    s = (f"The paper: lower layers pull teleported states back, deeper ones less. On the trained model the "
         f"distance reading {ratio_v.outcome}, the arrow reading {arrow_v.outcome}.")
    if ratio_v.outcome != arrow_v.outcome:
        s += (" The two readings differ: the arrows say whether a block pushes back along the displacement, "
              "the distance also counts what the blocks write in every other direction, and here that "
              "outweighs the pull.")
    out.append(s)
    pull_g, k4 = _pull_at(flows[trained], 7)
    if len(runs) > 1:
        ctrl = runs[1].label
        c_ratio, c_arrow = by[(ctrl, C13_RATIO_CRITERION)], by[(ctrl, C13_ARROWS_CRITERION)]
        pull_c, _ = _pull_at(flows[ctrl], 7)
        s = (f"The random-init control: distance reading {c_ratio.outcome}, arrow reading {c_arrow.outcome}. The "
             f"pull along the displacement {k4} layers after a teleport at paper layer 7 (1 − κ̄, full space): "
             f"trained {number(pull_g)}, control {number(pull_c)}")
        if pull_g <= 0.05:
            s += ": the trained model hardly pulls there."
        elif pull_c <= 0.05 or pull_g > 3 * pull_c:
            s += ": the size of the pull comes with training."
        elif pull_c >= 0.5 * pull_g:
            s += ": the control pulls about as much, so the pull comes with the architecture."
        else:
            s += ": the control pulls less: part of the pull comes with training."
        out.append(s)
        # An arrow counts as inward for any shrink, however small: say what a 5 % floor leaves.
        if c_arrow.outcome == arrow_v.outcome and len(flows[trained].layers) >= 4:
            strict = {lab: np.mean([flows[lab].inward(j, 1, "pca", min_pull=0.05).estimate
                                    for j in _early_late(flows[lab])[0]]) for lab in (trained, ctrl)}
            out.append(f"Both models' arrows point inward by the criterion's reading (any shrink counts). Counting "
                       f"only arrows that pull back by at least 5%, the early layers' inward share is "
                       f"{strict[trained]:.0%} on the trained model and {strict[ctrl]:.0%} on the control: where that "
                       "is near or below one half, the arrows' signs alone are weak evidence of an attractor (see the "
                       "robustness page).")
    pull_r, _ = _pull_at(flows[trained], 7, "random")
    if max(pull_g, pull_r) <= 0.05:
        out.append(f"In the trained model neither grid displacements ({number(pull_g)}) nor random directions of the "
                   f"same length ({number(pull_r)}) at paper layer 7 are pulled back after {k4} layers (1 − κ̄).")
    else:
        out.append(f"In the trained model, random directions of the same length at paper layer 7 are pulled back by "
                   f"{number(pull_r)} after {k4} layers, grid displacements by {number(pull_g)}: "
                   + ("the pull is not specific to the plane the data vary in." if pull_r > 0.5 * pull_g
                      else "the pull is specific to the plane the data vary in."))
    return out


# --------------------------------------------------------------------------- build it: the hook


def _as_prompt(input_ids, device):
    """``input_ids`` (sequence of int, or a LongTensor of shape (seq,) or (1, seq)) as (1, seq)."""
    import torch

    ids = torch.as_tensor(input_ids if isinstance(input_ids, torch.Tensor) else [int(t) for t in input_ids])
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[0] != 1 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must be one prompt of token ids, shape (seq,) or (1, seq); got "
                         f"{tuple(ids.shape)} {ids.dtype}")
    if ids.shape[1] < 2:
        raise ValueError("input_ids needs at least 2 tokens: the check looks at the positions before the last")
    return ids.to(device=device, dtype=torch.long)


def _hook_keys(model) -> dict:
    """``{module: (forward pre-hook ids, forward hook ids)}`` of every submodule."""
    return {m: (set(m._forward_pre_hooks), set(m._forward_hooks)) for m in model.modules()}


def _remove_new_hooks(model, before: dict) -> int:
    """Remove the forward (pre-)hooks registered since ``before`` (:func:`_hook_keys`); their count."""
    n = 0
    for m in model.modules():
        pre, post = before.get(m, (set(), set()))
        for k in set(m._forward_pre_hooks) - pre:
            m._forward_pre_hooks.pop(k)
            getattr(m, "_forward_pre_hooks_with_kwargs", {}).pop(k, None)
            n += 1
        for k in set(m._forward_hooks) - post:
            m._forward_hooks.pop(k)
            for extra in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called"):
                getattr(m, extra, {}).pop(k, None)
            n += 1
    return n


def _logits_of(out) -> np.ndarray:
    """A forward pass's logits (an output with ``.logits`` or a tensor) as float64 ``(seq, vocab)``
    or ``(1, vocab)``; raises ``TypeError`` on anything else."""
    import torch

    logits = getattr(out, "logits", out)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"returned {type(out).__name__}; return the model's logits (model(input_ids).logits)")
    x = logits.detach().float().cpu().numpy().astype(np.float64)
    return x.reshape(-1, x.shape[-1])


def _read_pass(model, layer: int, run) -> dict:
    """Run ``run()`` (one forward pass) with readers: every site at every position (forward
    pre-hooks, :func:`tdcourse.capture.residual_hooks`), what decoder layer ``layer`` computed from
    (its input after every pre-hook, read by a forward hook) and its output, and ``run()``'s
    value. Arrays of shape ``(seq, d_model)``, float64; ``sites`` is ``(2L, seq, d_model)``."""
    import torch

    n_sites = 2 * len(decoder_layers(model))
    sites: list = [None] * n_sites
    seen: dict = {}

    def on_state(pos, hidden):
        sites[pos] = hidden[0].detach().double().cpu().numpy()

    def on_layer(module, args, kwargs, output):
        seen["input"] = _layer_input(args, kwargs)[0].detach().double().cpu().numpy()
        out = output[0] if isinstance(output, tuple) else output
        seen["output"] = out[0].detach().double().cpu().numpy()

    handle = decoder_layers(model)[layer].register_forward_hook(on_layer, with_kwargs=True)
    try:
        with torch.inference_mode(), residual_hooks(model, on_state):
            value = run()
    finally:
        handle.remove()
    return {"sites": sites, "value": value, **seen}


def check_inject(fn, model, input_ids, layer: int, vector) -> bool:
    """Check a learner's injection hook against :func:`inject` on one prompt and one state.

    The learner's ``fn(model, input_ids, layer, vector)`` runs the prompt once with the input of
    decoder layer ``layer`` (``resid_pre.layer``, the paper's pre-Attn ``layer``) replaced *at the
    last token* by ``vector`` (a forward pre-hook on ``model.model.layers[layer]``), removes its
    hook, also when the forward pass fails, and returns the logits. The check runs it with readers
    at every site and compares with the same forward pass under :func:`inject` (one forward pass
    per case; a few tens of milliseconds on SmolLM2). It prints one line per case, what passed and
    what did not and why, in words, and returns whether all passed. Hooks the learner's function
    leaves behind are removed before the check returns (so that the rest of the chapter is not
    perturbed by them), and it says so.

    The cases, and the usual mistakes each rejects:

    - layer ``layer`` computes from ``vector`` at the last token: rejects *adding* the vector to
      the state instead of replacing it, and a hook on another layer or on the layer's output;
    - every other position is left as it was: rejects replacing every position (``hidden[:] =``);
    - the layers before ``layer`` are left alone: rejects a hook on an earlier layer;
    - the states after the injection (``resid_mid.layer`` on, last token) and the logits equal
      :func:`inject`'s: rejects injecting at layer ``layer + 1`` or at the layer's output (a
      forward hook: off by one block);
    - the hook is gone when the function returns, and the next forward pass is unperturbed;
    - the hook is gone also when the forward pass fails (``handle.remove()`` in ``finally``).

    Parameters
    ----------
    fn : callable
        ``fn(model, input_ids, layer, vector)``: ``input_ids`` a LongTensor of shape (1, seq),
        ``layer`` an int, ``vector`` a tensor of shape (d_model,) in the model's dtype and device.
        Returns the logits, shape (1, seq, vocab) (a model output with ``.logits`` is taken too;
        with the last token's only, the earlier positions' logits are not compared).
    model : transformers Llama-style causal LM
    input_ids : sequence of int, or LongTensor of shape (seq,) or (1, seq)
        One prompt, at least 2 tokens (e.g. :data:`SEED_PROMPT` tokenized).
    layer : int
        ``0 … n_layers - 1``.
    vector : ndarray or tensor of shape (d_model,)
        The state to teleport to (e.g. ``plane.inverse(grid point)``).

    Returns
    -------
    bool
        True when every case passed.

    Raises
    ------
    ValueError
        A layer out of range, a prompt of fewer than 2 tokens, a vector of the wrong shape or
        with NaN / inf (the check's own inputs; the learner's errors are reported, not raised).
    """
    import torch

    from .exercises import NOT_WRITTEN, report, unwritten

    layers = decoder_layers(model)
    n_layers = len(layers)
    if not 0 <= int(layer) < n_layers:
        raise ValueError(f"layer {layer} is out of range: this model has layers 0 to {n_layers - 1}")
    layer = int(layer)
    param = next(model.parameters())
    ids = _as_prompt(input_ids, param.device)
    d_model = model.config.hidden_size
    vec = vector.detach().cpu().numpy() if isinstance(vector, torch.Tensor) else vector
    vec = check_array(vec, "vector").astype(np.float64)
    if vec.shape != (d_model,):
        raise ValueError(f"vector must have shape ({d_model},), got {vec.shape}")
    dtype = param.dtype if param.dtype.is_floating_point else torch.float32
    v_t = torch.as_tensor(vec, dtype=dtype, device=param.device)
    vec = v_t.double().cpu().numpy()  # what the model's dtype keeps of it

    def forward():
        return model(input_ids=ids).logits

    clean = _read_pass(model, layer, forward)
    with inject(model, layer, v_t):
        lib = _read_pass(model, layer, forward)
    clean_logits, lib_logits = _logits_of(clean["value"]), _logits_of(lib["value"])

    def close(a, b, ref):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-4, atol=1e-5 * (np.abs(ref).max() + 1)))

    first = 2 * layer + 1  # resid_mid.layer: the first site the injected state reaches
    names = site_names(n_layers)
    before = _hook_keys(model)
    template = False
    try:
        mine = _read_pass(model, layer, lambda: fn(model, ids.clone(), layer, v_t.clone()))
        template = unwritten(mine["value"])
        logits = _logits_of(mine["value"])
        error = None
    except Exception as err:  # noqa: BLE001 - a learner's bug is reported, not raised
        template = template or unwritten(err)
        mine, logits, error = None, None, f"raised {type(err).__name__}: {err}"
    if template and _hook_keys(model) == before:  # a template (None, ..., NotImplementedError), no hook left
        return report([(f"fn(model, input_ids, {layer}, vector) runs", False, NOT_WRITTEN)], width=68)
    cases = []
    if error is not None:
        cases.append((f"fn(model, input_ids, {layer}, vector) runs", False, error))
    else:
        got = mine["input"]
        used = got[-1]
        if close(used, vec, vec):
            msg = ""
        elif close(used, clean["input"][-1] + vec, vec):
            msg = "it holds the original state plus the vector: replace the state (hidden[:, -1] = vector), do not add"
        elif any(close(row, vec, vec) for row in got[:-1]):
            i = next(i for i, row in enumerate(got[:-1]) if close(row, vec, vec))
            msg = f"the vector went to position {i}, not to the last token (hidden[:, -1])"
        elif close(used, clean["input"][-1], clean["input"]):
            msg = (f"it is the original state: nothing reached layer {layer}'s input. Is the hook a forward *pre*-hook "
                   f"on model.model.layers[{layer}] (not on another layer, not a forward hook on its output)?")
        else:
            msg = "it is neither the vector nor the original state"
        cases.append((f"layer {layer} computes from the vector at the last token", not msg, msg))
        same_before = close(got[:-1], clean["input"][:-1], clean["input"])
        msg = "" if same_before else (
            "the positions before the last changed too"
            + (" (they hold the vector: replace hidden[:, -1] only, not every position)"
               if close(got[:-1], np.broadcast_to(vec, got[:-1].shape), vec) else ""))
        cases.append((f"the other positions of layer {layer}'s input are unchanged", same_before, msg))
        early = [p for p in range(2 * layer) if not close(mine["sites"][p], clean["sites"][p], clean["sites"][p])]
        cases.append((f"the layers before layer {layer} are unchanged", not early,
                      f"{names[early[0]]} changed: the hook sits on an earlier layer" if early else ""))
        later = [p for p in range(first, 2 * n_layers)
                 if not close(mine["sites"][p][-1], lib["sites"][p][-1], lib["sites"][p][-1])]
        msg = ""
        if later:
            msg = f"{names[later[0]]} differs from perturb.inject's"
            nxt = 2 * (layer + 1)
            if nxt < 2 * n_layers and close(mine["sites"][nxt][-1], vec, vec):
                msg += (f": the vector shows up as layer {layer}'s output (resid_pre.{layer + 1}). A forward hook "
                        "replaced what the layer returned, one block too late; a forward pre-hook replaces what "
                        "it takes")
            elif later[0] == first and close(mine["sites"][first][-1], clean["sites"][first][-1],
                                             clean["sites"][first]):
                msg += f": layer {layer} ran on the original state (is the hook on a later layer?)"
        cases.append((f"the later states ({names[first]} on) match perturb.inject",
                      not later, msg))
        rows = lib_logits if logits.shape == lib_logits.shape else lib_logits[-1:]
        good = close(logits, rows, rows)
        msg = "" if good else (f"shape {logits.shape}, expected {lib_logits.shape} (model(input_ids).logits)"
                               if logits.shape[-1] != lib_logits.shape[-1] or logits.shape[0] not in (1, lib_logits.shape[0])
                               else "they differ from the logits under perturb.inject")
        cases.append(("the logits match perturb.inject", good, msg))
    # Hooks left behind: is the next forward pass still perturbed? (Only run when there are some.)
    left_behind = any(set(m._forward_pre_hooks) - pre or set(m._forward_hooks) - post
                      for m, (pre, post) in before.items())
    perturbed = False
    if left_behind:
        with torch.inference_mode():
            perturbed = not close(_logits_of(forward()), clean_logits, clean_logits)
    left = _remove_new_hooks(model, before)
    if error is None or left or perturbed:
        ok = not left and not perturbed
        msg = "" if ok else (
            ("the next forward pass is still perturbed" if perturbed else "a hook is still registered")
            + f": remove the handle when the forward pass is done (the check removed {left} hook"
            + ("s" if left != 1 else "") + " so that the rest of the chapter runs unperturbed)")
        cases.append(("the hook is removed when the function returns", ok, msg))
    # ... and also when the forward pass fails (the hook raises on a vector of the wrong width).
    before = _hook_keys(model)
    with contextlib.suppress(Exception), torch.inference_mode():  # expected to fail: the vector does not fit
        fn(model, ids.clone(), layer, torch.zeros(d_model + 1, dtype=dtype, device=param.device))
    left = _remove_new_hooks(model, before)
    cases.append(("the hook is removed when the forward pass fails, too", not left,
                  "" if not left else "a hook was left behind: register it, then run the model inside try: … "
                  f"finally: handle.remove() (the check removed {left})"))
    return report(cases, width=68)


# --------------------------------------------------------------------------- exercises


def check_recovery_ratio(fn) -> bool:
    """Check a learner's recovery ratio against :func:`recovery_ratio` on fixed inputs.

    ``fn(dist, k)`` takes ``dist`` of shape ``(m, K)`` and ``k`` and returns the ratio of the
    mean distance at step ``k`` to the mean distance at step 0 (a float). Prints what passed
    and returns True when every case does.
    """
    from .exercises import NOT_WRITTEN, report, unwritten

    rng = np.random.default_rng(123)
    cases = [
        ("halves every step", np.outer(np.full(8, 2.0), 0.5 ** np.arange(4)), 2, 0.25),
        ("constant distance", np.ones((5, 3)), 1, 1.0),
        ("ratio of means, not mean of ratios", np.array([[1.0, 3.0], [3.0, 1.0]]), 1, 1.0),
        ("random", rng.uniform(0.5, 2.0, (20, 6)), 4, None),
    ]
    ok = True
    for name, dist, k, want in cases:
        want = recovery_ratio(dist, k, n_boot=10).estimate if want is None else want
        try:
            got = float(fn(dist.copy(), k))
        except Exception as err:  # noqa: BLE001 - show the learner what went wrong
            if unwritten(err):  # a template (None, ..., NotImplementedError): one line says so
                return report([(name, False, NOT_WRITTEN)])
            print(f"✗ {name}: raised {type(err).__name__}: {err}")
            ok = False
            continue
        good = np.isclose(got, want, rtol=1e-6)
        ok &= bool(good)
        print(f"{'✓' if good else '✗'} {name}: got {got:.6g}, expected {want:.6g}")
    print("All checks passed." if ok else "Some checks failed.")
    return ok


def check_shift_in_plane(fn) -> bool:
    """Check a learner's ``fn(plane, state, coords) -> ndarray (m, d_model)`` against
    :func:`shift_in_plane` on a fixed random plane: the result must project onto ``coords``
    and keep the state's off-plane part. Prints what passed; returns True when all did."""
    from .exercises import NOT_WRITTEN, report, unwritten

    rng = np.random.default_rng(7)
    d = 12
    q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    plane = Plane(mean=rng.standard_normal(d), components=q.T, std=np.array([2.0, 1.0]), explained=np.array([0.5, 0.2]))
    state = rng.standard_normal(d) * 3
    coords = rng.standard_normal((5, 2))
    want = shift_in_plane(plane, state, coords)
    ok = True
    try:
        value = fn(plane, state.copy(), coords.copy())
        got = np.asarray(value, dtype=float)
    except Exception as err:  # noqa: BLE001 - show the learner what went wrong
        value = err
        if not unwritten(err):
            print(f"✗ raised {type(err).__name__}: {err}")
            print("Some checks failed.")
            return False
    if unwritten(value):  # a template (None, ..., NotImplementedError): one line says so
        return report([("shift_in_plane", False, NOT_WRITTEN)])
    checks = [
        ("shape (m, d_model)", got.shape == want.shape),
        ("projects onto coords", got.shape == want.shape and np.allclose(plane.project(got), coords, atol=1e-8)),
        ("keeps the state's off-plane part", got.shape == want.shape and np.allclose(
            (got - state) - ((got - state) @ plane.components.T) @ plane.components, 0, atol=1e-8)),
    ]
    for name, good in checks:
        ok &= bool(good)
        print(f"{'✓' if good else '✗'} {name}")
    print("All checks passed." if ok else "Some checks failed.")
    return ok
