"""Benchmark: the layer-shuffle null of rotation counts, vectorised vs a plain per-unit loop.

The null of chapter 05 recomputes the rotation count R of every unit's mean trajectory under
1000 random orders of the sites. ``tdcourse.rotations.shuffled_rotation_counts`` does it in
one vectorised pass (units × shuffles in chunks); the baseline below is the direct
transcription of the definition: a Python loop over units and shuffles, one 1-D curve at a
time. Both use the same permutations, and the script checks that they agree.

The loop is timed on a subset of units and scaled to all of them (it is linear in units).

Run: ``python benchmarks/bench_rotations.py [--shuffles 1000] [--loop-units 24]``
(uses the cached SmolLM2-135M capture if ``TDCOURSE_CACHE`` holds it, else random walks of
the same shape).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tdcourse import rotations


def rotation_count_1d(a: np.ndarray) -> float:
    """R of one curve of shape (n_sites,), straight from the definition (tangent angles, wrapped)."""
    g = np.gradient(a)
    x, y = a - a[0], g - g[0]
    theta = np.arctan2(np.diff(y), np.diff(x))
    dtheta = (np.diff(theta) + np.pi) % (2 * np.pi) - np.pi
    return float(dtheta.sum() / (2 * np.pi))


def loop_null(traj: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """The baseline: ``out[s, u] = R(traj[u, perms[s]])`` with a Python loop over units and shuffles."""
    out = np.empty((perms.shape[0], traj.shape[0]))
    for u in range(traj.shape[0]):
        for s in range(perms.shape[0]):
            out[s, u] = rotation_count_1d(traj[u, perms[s]])
    return out


def mean_trajectory() -> tuple[np.ndarray, str]:
    """(d_model, n_sites) mean trajectory of the cached SmolLM2 capture, or random walks of that shape."""
    try:
        from tdcourse.capture import load_activations

        run = load_activations(n=1000, progress=False)  # reads the cache; captures if it is missing
        return rotations.unit_trajectories(run.acts, "mean"), run.label
    except Exception as err:  # no model / no cache: the timing does not depend on the values
        print(f"(SmolLM2 capture unavailable: {err}; using random walks of the same shape)")
        rng = np.random.default_rng(0)
        return rng.standard_normal((576, 60)).cumsum(-1), "random walks (576 × 60)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shuffles", type=int, default=1000)
    ap.add_argument("--loop-units", type=int, default=24, help="units the slow loop is timed on")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many vectorised runs")
    args = ap.parse_args()

    traj, label = mean_trajectory()
    n_units, n_sites = traj.shape
    perms = rotations.layer_permutations(n_sites, args.shuffles, seed=0)

    best = np.inf
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        vec = rotations.shuffled(traj, rotations.rotation_count, perms=perms)
        best = min(best, time.perf_counter() - t0)

    k = min(args.loop_units, n_units)
    t0 = time.perf_counter()
    ref = loop_null(traj[:k], perms)
    t_loop = (time.perf_counter() - t0) * n_units / k

    err = float(np.abs(vec[:, :k] - ref).max())
    print(f"data: {label}, {n_units} units × {n_sites} sites, {args.shuffles} shuffles "
          f"({n_units * args.shuffles:,} rotation counts)")
    print(f"vectorised (tdcourse.rotations.shuffled): {best:8.2f} s  (best of {args.repeat})")
    print(f"plain per-unit loop:                      {t_loop:8.2f} s  (timed on {k} units, scaled to {n_units})")
    print(f"speed-up: {t_loop / best:.0f}×   max |difference| on the timed units: {err:.2e} turns")
    if err > 1e-6:
        raise SystemExit("the two implementations disagree")


if __name__ == "__main__":
    main()
