"""Nothing silently wrong, the whole kind: every public function of the analysis modules that
takes an array refuses NaN / inf and float16 (the course's one dtype rule,
:mod:`tdcourse.checks`) before computing anything, and every analysis refuses a run too small
to carry a verdict (its ``MIN_SAMPLES`` / ``MIN_LAYERS``) in words a learner understands.

The cases are built from the modules' ``__all__``: a public name must either have a case here
or be listed in ``NO_ARRAY_INPUT`` with the reason, so a new public function cannot escape.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

from tdcourse import checks, continuity, geometry, information, lowdim, perturb, rotations, stationarity, stats
from tdcourse.capture import Activations, check_acts, site_names

MODULES = ("stationarity", "continuity", "geometry", "information", "rotations", "lowdim", "perturb", "stats")


def _acts(n: int = 24, layers: int = 4, d: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.standard_normal((n, 2 * layers, d)), axis=1) + 3.0).astype(np.float32)


def _run(acts: np.ndarray) -> Activations:
    return Activations(acts=acts, sites=site_names(acts.shape[1] // 2), texts=[""] * len(acts), meta={})


A = _acts()                                   # (24, 8, 6): samples, sites, units
TRAJ = np.ascontiguousarray(A.mean(0).T.astype(np.float64))   # (6 units, 8 sites)
R = np.random.default_rng(1).uniform(0.2, 0.9, (7, 6))        # (n_pairs, d_model)
X = np.random.default_rng(2).standard_normal((40, 3))
Y = X + np.random.default_rng(3).standard_normal((40, 3))
PATH = np.cumsum(np.random.default_rng(4).standard_normal((8, 2)), axis=0)     # (n_sites, 2)
DIST = np.abs(np.random.default_rng(5).standard_normal((12, 4))) + 0.5
LOGP = np.log(np.random.default_rng(6).dirichlet(np.ones(10), size=3))
PLANE = perturb.fit_plane(A[:, 2].astype(np.float64))
EIG = np.array([[5.0, 2.0, 1.0, 0.5], [3.0, 3.0, 1.0, 0.1]])

# name -> builder(t): (args, kwargs), with ``t`` applied to the one array under test
CASES = {
    "stationarity.site_moments": lambda t: ((t(A),), {}),
    "stationarity.drift_ratio": lambda t: ((t(A),), {}),
    "stationarity.shuffled_sites": lambda t: ((t(A), np.random.default_rng(0)), {}),
    "stationarity.stationarity": lambda t: ((t(A),), {"n_null": 1}),
    "stationarity.verdicts": lambda t: ((_run(t(A)),), {"n_null": 1}),
    "continuity.adjacent_corr": lambda t: ((t(A),), {}),
    "continuity.adjacent_corr[basis]": lambda t: ((A,), {"basis": t(np.eye(6))}),
    "continuity.permutation_null": lambda t: ((t(A),), {}),
    "continuity.bootstrap_corr": lambda t: ((t(A),), {"n_boot": 3}),
    "continuity.bootstrap_corr[weights]": lambda t: ((A,), {"weights": t(stats.bootstrap_weights(24, 3))}),
    "continuity.stream_corr": lambda t: ((t(A),), {}),
    "continuity.sample_ranks": lambda t: ((t(A),), {}),
    "rotations.phase_randomized": lambda t: ((t(TRAJ),), {"n_surrogates": 2}),
    "rotations.phase_rotation_counts": lambda t: ((t(TRAJ),), {"n_surrogates": 2}),
    "continuity.write_ratio": lambda t: ((t(A),), {}),
    "continuity.split_within_across": lambda t: ((t(R),), {}),
    "continuity.within_minus_across": lambda t: ((t(R),), {}),
    "continuity.depth_trend": lambda t: ((t(R),), {}),
    "continuity.analyse": lambda t: ((t(A),), {"n_boot": 3, "n_dirs": 6}),
    "continuity.verdicts": lambda t: ((_run(t(A)),), {"n_boot": 3, "n_dirs": 6}),
    "geometry.norms": lambda t: ((t(A),), {}),
    "geometry.fraction_above": lambda t: ((t(A),), {}),
    "geometry.hoyer_density": lambda t: ((t(A),), {}),
    "geometry.density_indices": lambda t: ((t(A),), {}),
    "geometry.steps": lambda t: ((t(A),), {}),
    "geometry.consecutive_cosine": lambda t: ((t(A),), {}),
    "geometry.velocity": lambda t: ((t(A),), {}),
    "geometry.acceleration": lambda t: ((t(R),), {}),
    "geometry.verdicts": lambda t: ((_run(t(A)),), {"n_boot": 10}),
    "information.successive": lambda t: ((t(A),), {}),
    "information.same_input_groups": lambda t: ((t(A),), {}),
    "information.pearson": lambda t: ((t(X), Y), {}),
    "information.pearson[y]": lambda t: ((X, t(Y)), {}),
    "information.gaussian_mi": lambda t: ((t(R),), {}),
    "information.copula_mi": lambda t: ((t(X), Y), {}),
    "information.binned_mi": lambda t: ((t(X), Y), {}),
    "information.knn_mi": lambda t: ((t(X), Y), {}),
    "information.knn_mi[y]": lambda t: ((X, t(Y)), {}),
    "information.shuffled": lambda t: ((t(Y),), {}),
    "information.successive_mi": lambda t: ((t(A),), {}),
    "information.dip_and_recovery": lambda t: ((t(R.T),), {"n_boot": 10}),
    "information.mi_profile": lambda t: ((t(A),), {"n_units": 2}),
    "information.verdicts": lambda t: ((_run(t(A)),), {"n_units": 2}),
    "rotations.depth_gradient": lambda t: ((t(TRAJ),), {}),
    "rotations.phase_portrait": lambda t: ((t(TRAJ),), {}),
    "rotations.turning_angles": lambda t: ((t(TRAJ),), {}),
    "rotations.rotation_count": lambda t: ((t(TRAJ),), {}),
    "rotations.unit_trajectories": lambda t: ((t(A),), {}),
    "rotations.rms_normalized_mean_trajectories": lambda t: ((t(A),), {}),
    "rotations.shuffled": lambda t: ((t(TRAJ), rotations.rotation_count), {"n_shuffles": 3}),
    "rotations.shuffled_rotation_counts": lambda t: ((t(TRAJ),), {"n_shuffles": 3}),
    "rotations.rescale_count": lambda t: ((t(R), 8), {}),
    "rotations.prefix_rotation_counts": lambda t: ((t(TRAJ), [4, 8]), {}),
    "rotations.amplitude_growth": lambda t: ((t(TRAJ),), {}),
    "rotations.classify_units": lambda t: ((t(R[0]), R[1]), {}),
    "rotations.classify_units[growth]": lambda t: ((R[0], t(R[1])), {}),
    "rotations.example_units": lambda t: ((np.array(["orbit"] * 6), t(R[0])), {}),
    "rotations.rotation_test": lambda t: ((t(A),), {"n_shuffles": 3}),
    "rotations.analyse": lambda t: ((t(A),), {"n_shuffles": 3}),
    "rotations.verdicts": lambda t: ((_run(t(A)), "ch"), {"n_shuffles": 3}),
    "lowdim.pooled_standardize": lambda t: ((t(A),), {}),
    "lowdim.pooled_pca": lambda t: ((t(A),), {}),
    "lowdim.site_spread": lambda t: ((t(A),), {}),
    "lowdim.participation_ratio": lambda t: ((t(EIG),), {}),
    "lowdim.n_components_for": lambda t: ((t(EIG),), {}),
    "lowdim.site_spectra": lambda t: ((t(A),), {"n_boot": 3}),
    "lowdim.site_spectra_both": lambda t: ((t(A),), {"n_boot": 3}),
    "lowdim.se_interval": lambda t: ((t(R[0]), R), {}),
    "lowdim.se_interval[boot]": lambda t: ((R[0], t(R)), {}),
    "lowdim.train_autoencoder": lambda t: ((t(A),), {"epochs": 1}),
    "lowdim.check_training_step": lambda t: ((lambda model, opt, xb: 0.0,), {"acts": t(A)}),
    "lowdim.site_nmse": lambda t: ((t(DIST), DIST + 1), {}),
    "lowdim.site_nmse[spread]": lambda t: ((DIST, t(DIST + 1)), {}),
    "lowdim.early_minus_late": lambda t: ((t(R[0]),), {}),
    "lowdim.path_length_ratio": lambda t: ((t(PATH),), {}),
    "lowdim.bend_ratio": lambda t: ((t(PATH),), {}),
    "lowdim.turning_angles": lambda t: ((t(PATH),), {}),
    "lowdim.mean_trajectory_bootstrap": lambda t: ((t(np.stack([PATH, PATH + 1, PATH - 1])),), {"n_boot": 3}),
    "lowdim.site_shuffle_null": lambda t: ((t(PATH),), {"n_perm": 3}),
    "lowdim.analyse": lambda t: ((_run(t(A)),), {"n_boot": 3, "epochs": 1}),
    "lowdim.verdicts": lambda t: ((_run(t(A)),), {"n_boot": 3}),
    "lowdim.PooledPCA.sq_error": lambda t: ((lowdim.pooled_pca(A, 2), t(A)), {}),
    "perturb.fit_plane": lambda t: ((t(A[:, 2]),), {}),
    "perturb.shift_in_plane": lambda t: ((PLANE, t(A[0, 2]), np.array([[1.0, 0.5]])), {}),
    "perturb.shift_in_plane[coords]": lambda t: ((PLANE, A[0, 2], t(np.array([[1.0, 0.5]]))), {}),
    "perturb.random_directions": lambda t: ((t(np.array([1.0, 2.0])), 6), {}),
    "perturb.distances": lambda t: ((t(A[:, 2:]), A[0, 2:]), {}),
    "perturb.distances[natural]": lambda t: ((A[:, 2:], t(A[0, 2:])), {}),
    "perturb.kept_fraction": lambda t: ((t(A[:, 2:] + 1), A[0, 2:]), {}),
    "perturb.recovery_ratio": lambda t: ((t(DIST),), {"n_boot": 10}),
    "perturb.ratio_difference": lambda t: ((t(DIST), DIST), {"n_boot": 10}),
    "perturb.ratio_difference[b]": lambda t: ((DIST, t(DIST)), {"n_boot": 10}),
    "perturb.kl_divergence": lambda t: ((t(LOGP[0]), LOGP), {}),
    "perturb.kl_divergence[logprobs]": lambda t: ((LOGP[0], t(LOGP)), {}),
    "perturb.flow_fields": lambda t: ((_run(t(A)),), {}),
    "perturb.Plane.project": lambda t: ((PLANE, t(A[:, 2])), {}),
    "perturb.Plane.inverse": lambda t: ((PLANE, t(np.array([[1.0, 0.5]]))), {}),
    "stats.bootstrap_ci": lambda t: ((t(X[:, 0]),), {"n_boot": 10}),
    "stats.curve_trend": lambda t: ((t(X.reshape(20, 6)),), {"n_boot": 10}),
    "stats.permutation_pvalue": lambda t: ((0.5, t(X[:, 0])), {}),
    "stats.spearman_rows": lambda t: ((t(X.reshape(20, 6)),), {}),
    "stats.zscore": lambda t: ((t(np.array(0.5)), X[:, 0]), {}),
    "stats.zscore[null]": lambda t: ((0.5, t(X[:, 0])), {}),
}

# Public names that take no array of their own (constants, records, builders of integers or
# names, exercise checkers that take a learner's function, judgements of a computed record).
NO_ARRAY_INPUT = {
    "stationarity.Stationarity": "result record",
    "stationarity.check_site_means": "takes the learner's function",
    "stationarity.check_drift_ratio": "takes the learner's function",
    "stationarity.check_first_crossing": "takes the learner's function",
    "continuity.HIGH_R": "constant",
    "continuity.METHODS": "constant",
    "continuity.TRENDS": "constant",
    "continuity.AGGREGATES": "constant",
    "information.ESTIMATORS": "constant",
    "rotations.NULLS": "constant",
    "stationarity.NORMALISE": "constant",
    "rotations.reclassify": "takes a computed RotationAnalysis (its arrays were checked when it was computed)",
    "continuity.pair_names": "site names",
    "continuity.random_rotation": "integers in, a seeded basis out",
    "continuity.Continuity": "result record",
    "continuity.check_adjacent_corr": "takes the learner's function",
    "continuity.check_uncorrelated_write_r": "takes the learner's function",
    "geometry.DEFAULT_TAUS": "constant",
    "geometry.DEFAULT_TRIM": "constant",
    "geometry.MIN_VELOCITY_RATIO": "constant",
    "geometry.MIN_SAMPLES": "constant",
    "geometry.MIN_LAYERS": "constant",
    "geometry.step_sites": "site names",
    "geometry.check_hoyer_density": "takes the learner's function",
    "geometry.check_cosine_from_norms": "takes the learner's function",
    "geometry.check_velocity": "takes the learner's function (its real samples go through check_acts)",
    "geometry.check_fraction_above": "takes the learner's function",
    "information.N_UNITS": "constant",
    "information.pick_units": "integers in",
    "information.DipRecovery": "result record",
    "information.MIProfile": "result record",
    "information.check_gaussian_mi": "takes the learner's function",
    "information.check_binned_mi": "takes the learner's function",
    "rotations.PAPER_MEAN_R": "constant",
    "rotations.PAPER_N_SITES": "constant",
    "rotations.CLASSES": "constant",
    "rotations.layer_permutations": "integers in",
    "rotations.reference_rotation_counts": "integers in, seeded reference curves out",
    "rotations.RotationTest": "result record",
    "rotations.RotationAnalysis": "result record",
    "rotations.check_rotation_count": "takes the learner's function",
    "rotations.check_amplitude_growth": "takes the learner's function",
    "rotations.check_cut": "takes the learner's result (a RotationTest) and the run it came from",
    "lowdim.PooledPCA": "result record (its sq_error has a case)",
    "lowdim.SiteSpectra": "result record",
    "lowdim.AutoencoderFit": "result record",
    "lowdim.build_autoencoder": "integers in",
    "lowdim.thirds": "integers in",
    "lowdim.LowDim": "result record",
    "lowdim.check_participation_ratio": "takes the learner's function",
    "lowdim.check_bend_ratio": "takes the learner's function",
    "perturb.SEED_PROMPT": "constant",
    "perturb.PAPER_LAYERS": "constant",
    "perturb.PAPER_N_LAYERS": "constant",
    "perturb.VERDICT_PAPER_LAYERS": "constant",
    "perturb.C13_RATIO_CRITERION": "constant",
    "perturb.C13_ARROWS_CRITERION": "constant",
    "perturb.Plane": "result record (project and inverse have cases)",
    "perturb.Teleport": "result record",
    "perturb.Flows": "result record of flow_fields (whose input has a case)",
    "perturb.map_layers": "integers in",
    "perturb.injection_layers": "integers in",
    "perturb.grid": "a fitted Plane and integers in",
    "perturb.model_for": "loads the run's model",
    "perturb.boundary_names": "integers in",
    "perturb.verdicts": "judges the Flows of flow_fields (whose input has a case)",
    "perturb.check_inject": "takes the learner's function (its vector's checks: test_teleport_exercise.py)",
    "perturb.check_recovery_ratio": "takes the learner's function",
    "perturb.check_shift_in_plane": "takes the learner's function",
    "stats.Interval": "result record",
    "stats.Trend": "result record",
    "stats.bootstrap_weights": "integers in",
    "stats.proportion_ci": "integers in",
}
# the model's own forward passes, checked with a tiny Llama below
MODEL_INPUT = {"perturb.inject", "perturb.teleport"}
for _m in MODULES[:-1]:  # every analysis module (not stats)
    NO_ARRAY_INPUT.update({f"{_m}.MIN_SAMPLES": "constant", f"{_m}.MIN_LAYERS": "constant"})


def _public(module: str) -> list[str]:
    return [f"{module}.{n}" for n in importlib.import_module(f"tdcourse.{module}").__all__]


def test_every_public_name_has_a_case_or_a_reason():
    cased = {name.split("[")[0] for name in CASES} | MODEL_INPUT
    public = [n for m in MODULES for n in _public(m)]
    missing = [n for n in public if n not in cased and n not in NO_ARRAY_INPUT]
    assert missing == [], f"public names with no input check case and no reason: {missing}"
    stale = [n for n in cased | set(NO_ARRAY_INPUT) if n.count(".") == 1 and n not in public]
    assert stale == [], f"cases for names that are not public (any more): {stale}"


def _call(name: str, t):
    args, kwargs = CASES[name](t)
    parts = name.split("[")[0].split(".")
    obj = importlib.import_module(f"tdcourse.{parts[0]}")
    for p in parts[1:]:
        obj = getattr(obj, p)
    if len(parts) == 3:  # a method: the first argument is the instance
        return getattr(args[0], parts[2])(*args[1:], **kwargs)
    return obj(*args, **kwargs)


def _nan(a):
    b = np.array(a, dtype=np.float64, order="C")  # a C-ordered copy: reshape(-1) is a view of it
    b.reshape(-1)[0] = np.nan
    return b


def _inf(a):
    b = np.array(a, dtype=np.float64, order="C")
    b.reshape(-1)[-1] = -np.inf
    return b


def _f16(a):
    return np.asarray(a).astype(np.float16)


# Inputs where a NaN (or inf) has a documented meaning: it is carried to the result, never
# dropped (tested below); float16 is refused there too.
MEANINGFUL = {
    "continuity.split_within_across": ("nan",),   # r of a constant unit: undefined
    "continuity.within_minus_across": ("nan",),
    "continuity.depth_trend": ("nan",),
    "information.gaussian_mi": ("nan",),
    "rotations.classify_units[growth]": ("nan", "inf"),   # no amplitude / out of a point
}
POISONS = {"nan": (_nan, "NaN"), "inf": (_inf, "inf"), "f16": (_f16, "float16")}


@pytest.mark.parametrize("name, kind", [(n, k) for n in sorted(CASES) for k in POISONS
                                         if k not in MEANINGFUL.get(n, ())])
def test_non_finite_and_float16_inputs_are_refused_before_any_statistic(name, kind):
    poison, words = POISONS[kind]
    with pytest.raises(ValueError, match=words):
        _call(name, poison)


def test_an_undefined_r_is_carried_to_its_unit_and_never_dropped():
    r = R.copy()
    r[3, 2] = np.nan                                   # unit 2 is constant at pair 3 (across layers 1 -> 2)
    within, across = continuity.split_within_across(r)
    assert np.isnan(across[1, 2]) and np.isfinite(np.delete(across, 2, axis=1)).all() and np.isfinite(within).all()
    d = continuity.within_minus_across(r)
    t = continuity.depth_trend(r)
    assert np.isnan(d[2]) and np.isnan(t[2])
    assert np.isfinite(np.delete(t, 2)).all() and np.isfinite(np.delete(d, 2)).all()
    np.testing.assert_allclose(np.delete(t, 2), np.delete(continuity.depth_trend(R), 2))
    mi = information.gaussian_mi(np.array([0.5, np.nan, -0.5]))
    assert np.isnan(mi[1]) and np.isfinite(mi[[0, 2]]).all()


def test_an_amplitude_growth_of_nan_or_inf_has_its_documented_class():
    classes = rotations.classify_units(np.array([3.0, 3.0, 3.0, 0.2]), np.array([np.nan, np.inf, 1.0, np.inf]))
    assert classes.tolist() == ["no full turn", "outward spiral", "orbit", "no full turn"]


@pytest.mark.parametrize("name", sorted(n for n in CASES if not n.split("[")[0].endswith(("analyse", "verdicts",
                                                                                        "flow_fields", "mi_profile"))))
def test_the_same_calls_run_on_clean_float32_input(name):
    """The cases are right: on the clean arrays the same call computes (so the refusals above
    are about the NaN, the inf or the dtype, not about a wrong call)."""
    _call(name, lambda a: a)


def test_the_dtype_rule_is_decided_once():
    a = _acts(n=4)
    assert check_acts(a) is a and checks.check_array(a.astype(np.float64)).dtype == np.float64
    assert check_acts(a.astype(np.int64)).dtype == np.float64       # integers: exact in float64
    for bad in (np.float16, np.longdouble, np.complex64, bool):
        with pytest.raises(ValueError, match="float32"):
            check_acts(a.astype(bad))
    with pytest.raises(ValueError, match=r"astype\(np.float32\)"):
        checks.check_array(np.ones(3, dtype=np.float16), "h")


def test_float16_at_8b_scale_would_have_overflowed_and_is_refused_with_the_fix():
    """What the rule prevents: Llama-scale states (|h| ~ 300 in late layers) squared in float16."""
    h = np.full((2, 4, 64), 300.0, dtype=np.float16)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.square(h).sum(-1)).all()
    with pytest.raises(ValueError, match=r"65504.*run = dataclasses.replace\(run, acts=run.acts.astype\(np.float32\)\)"):
        rotations.verdicts(_run(h), "ch")
    with pytest.raises(ValueError, match=r"65504.*acts = acts.astype\(np.float32\)"):
        rotations.analyse(h)
    with pytest.raises(ValueError, match="float16"):
        lowdim.analyse(_run(h))


@pytest.fixture(scope="module")
def tiny():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("poison, words", [(_nan, "NaN"), (_inf, "inf"), (_f16, "float16")], ids=["nan", "inf", "f16"])
def test_teleport_and_inject_refuse_non_finite_and_float16_states(tiny, poison, words):
    states = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    with pytest.raises(ValueError, match=words):
        perturb.teleport(tiny, [3, 4, 5], 1, poison(states))
    with pytest.raises(ValueError, match=words):
        with perturb.inject(tiny, 1, poison(states)):
            pass
    out = perturb.teleport(tiny, [3, 4, 5], 1, states)               # clean states run
    assert np.isfinite(out.states).all()


# --------------------------------------------------------------------------- too small to carry a verdict

# module -> the entry the chapter calls first, as f(acts) (cheap settings)
ENTRIES = {
    "stationarity": lambda a: stationarity.stationarity(a, n_null=1),
    "continuity": lambda a: continuity.analyse(a, n_boot=3, n_dirs=4),
    "geometry": lambda a: geometry.verdicts(_run(a), n_boot=10),
    "information": lambda a: information.mi_profile(a, n_units=2),
    "rotations": lambda a: rotations.analyse(a, n_shuffles=3, n_samples=5, n_shuffles_per_sample=2,
                                             n_shuffles_growth=3),
    "lowdim": lambda a: lowdim.analyse(_run(a), n_boot=3, epochs=1, hidden=(4,)),
    "perturb": lambda a: perturb.verdicts(_run(a)),   # the experiment alone (flow_fields) runs on any size
}
# and the verdicts of each (with the statistic computed, they must refuse too)
VERDICTS = {
    "stationarity": lambda a: stationarity.verdicts(_run(a), n_null=1),
    "continuity": lambda a: continuity.verdicts(_run(a), n_boot=3, n_dirs=4),
    "geometry": lambda a: geometry.trend_table([_run(a)], {"unknown model": geometry.density_indices(a)}, n_boot=10),
    "information": lambda a: information.verdicts(_run(a), n_units=2),
    "rotations": lambda a: rotations.verdicts(_run(a), "ch", n_shuffles=3),
    "lowdim": lambda a: lowdim.verdicts(_run(a), n_boot=3),
    "perturb": lambda a: perturb.verdicts(_run(a)),
}


@pytest.mark.parametrize("module", sorted(ENTRIES))
def test_minimum_sizes_are_stated_in_the_module_and_its_docstring(module):
    mod = importlib.import_module(f"tdcourse.{module}")
    assert isinstance(mod.MIN_SAMPLES, int) and isinstance(mod.MIN_LAYERS, int)
    # CI runs every chapter on the stand-ins at the Makefile's STANDIN_N, one of them with 4 layers
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    standin_n = int(re.search(r"^STANDIN_N \?= (\d+)$", makefile, flags=re.M).group(1))
    assert 3 <= mod.MIN_SAMPLES <= standin_n and 2 <= mod.MIN_LAYERS <= 4
    assert "MIN_SAMPLES" in mod.__doc__ and "MIN_LAYERS" in mod.__doc__
    assert {"MIN_SAMPLES", "MIN_LAYERS"} <= set(mod.__all__)


@pytest.mark.parametrize("module", sorted(ENTRIES))
@pytest.mark.parametrize("table", [ENTRIES, VERDICTS], ids=["entry", "verdicts"])
def test_too_few_layers_or_samples_are_refused_in_words(module, table):
    mod = importlib.import_module(f"tdcourse.{module}")
    fn = table[module]
    for layers in sorted({1, mod.MIN_LAYERS - 1}):
        with pytest.raises(ValueError, match=rf"Too few layers: .*at least {mod.MIN_LAYERS} layers.* has {layers} "):
            fn(_acts(n=max(mod.MIN_SAMPLES, 24), layers=layers))
    for n in sorted({1, 2, mod.MIN_SAMPLES - 1}):
        with pytest.raises(ValueError, match=rf"Too few samples: .*at least N = {mod.MIN_SAMPLES} .* N = {n}\."):
            fn(_acts(n=n, layers=4))


@pytest.mark.parametrize("module", sorted(set(ENTRIES) - {"perturb"}))
def test_the_smallest_run_allowed_carries_a_verdict(module):
    """At exactly MIN_SAMPLES and MIN_LAYERS the analysis runs (the minimum is not too strict)."""
    mod = importlib.import_module(f"tdcourse.{module}")
    ENTRIES[module](_acts(n=mod.MIN_SAMPLES, layers=mod.MIN_LAYERS, d=12))


def test_teleport_verdicts_refuse_a_small_run_before_the_model_is_loaded():
    """Chapter 7's verdict refuses a too-small run before loading anything (no model is
    reachable for this synthetic run: a refusal about size, not about the model, proves the order)."""
    with pytest.raises(ValueError, match="Too few samples"):
        perturb.verdicts(_run(_acts(n=2, layers=4)))
    with pytest.raises(ValueError, match="Too few layers"):
        perturb.verdicts(_run(_acts(n=30, layers=2)))
