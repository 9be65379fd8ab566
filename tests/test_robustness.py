"""tdcourse.robustness: specifications per claim, fidelity of the primary one, thresholds that flip
where they should, the fragile mark, and the data axes' recipes."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from tdcourse import continuity, geometry, information, lowdim, perturb, robustness, rotations, scoreboard, stats
from tdcourse.capture import Activations, site_names
from tdcourse.data import SampleRecipe, body_lines, load_wikitext
from tdcourse.verdicts import Verdict


def _run(acts: np.ndarray) -> Activations:
    n, s, _ = acts.shape
    return Activations(acts=np.asarray(acts, np.float32), sites=site_names(s // 2), texts=[""] * n, meta={})


def _walk(n=80, s=16, d=40, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((n, s, d)) * np.linspace(0.5, 2.0, s)[None, :, None]
    return steps.cumsum(1) + rng.standard_normal((1, 1, d)) * 3


# --------------------------------------------------------------------------- declarations


def test_every_claim_and_reading_has_a_primary_two_alternative_definitions_and_seeds():
    rows = [f"{c} ({r})" if r else c for c in [f"C{i}" for i in range(1, 14)] + ["S1", "S2", "S3", "S4"]
            for r in robustness.READINGS.get(c, ("",))]
    by_row: dict[str, list[robustness.Spec]] = {}
    for s in robustness.SPECS:
        by_row.setdefault(s.row, []).append(s)
    assert sorted(by_row) == sorted(rows)
    for row, specs in by_row.items():
        assert sum(s.primary for s in specs) == 1, row
        assert specs[0].primary, f"{row}: the primary specification comes first"
        definitions = [s for s in specs if s.role == "definition"]
        assert len(definitions) >= 2, f"{row} has fewer than two alternative definitions: {[s.name for s in specs]}"
        assert any(s.role == "seed" for s in specs) or row in robustness.NO_STABILITY, f"{row}: no seed, no reason"
    names = {s.name for s in robustness.SPECS if s.claim == "C11"}
    assert {"primary", "AE seed 1", "AE seed 2", "AE seed 3", "AE seed 4", "AE batch order 1"} <= names
    assert all(s.seed for s in robustness.SPECS if s.name.startswith(("AE seed", "AE batch order", "seed", "null seed")))
    c6 = {s.name: s for s in robustness.SPECS if s.claim == "C6"}
    assert c6["no floor"].kwargs == {"min_ratio": None}
    assert {s.name for s in robustness.SPECS if s.claim == "C1"} >= {"r > 0.9", "r > 0.94", "Spearman"}
    assert any(s.kwargs.get("min_pull") == 0.05 for s in robustness.SPECS if s.row == "C13 (arrows)")
    factors = {s.compute.get("factor") for s in robustness.SPECS if s.claim == "C10"}
    assert {1.5, 2.5, 3.0, 3.5} <= factors  # the listed ones kept, the two between them added
    phase = [s for s in robustness.SPECS if s.claim == "C9" and s.compute.get("null") == "phase"]
    assert len(phase) == 2 and all(s.compute["n_shuffles"] == 200 for s in phase)
    assert not any(s.seed for s in phase)  # another null is another definition, not a seed


def test_spec_records_refuse_bad_declarations():
    with pytest.raises(ValueError, match="data must be one of"):
        robustness.Spec("C1", "x", "y", data="elsewhere")
    with pytest.raises(ValueError, match="readings"):
        robustness.Spec("C13", "x", "y")
    with pytest.raises(ValueError, match="chapter's defaults"):
        robustness.Spec("C1", "primary", "y", {"high_r": 0.9}, primary=True)


def test_data_specs_cover_every_claim_on_both_axes():
    ds = robustness.data_specs()
    rows = {s.row for s in ds}
    assert rows == {s.row for s in robustness.SPECS}  # C11-C13 included: a cell not run says why
    assert {s.data for s in ds} == {"token 25 of 48", "whole lines"}
    assert all(s.role == "data" and s.label == s.data for s in ds)


# --------------------------------------------------------------------------- fidelity


@pytest.mark.parametrize("chapter", ["01_residual_stream", "02_continuity", "03_growth", "04_information",
                                     "05_rotations", "06_low_dimensional"])
def test_primary_specification_reproduces_the_chapter_exactly(chapter):
    module, claims = scoreboard.CHAPTERS[chapter]
    run = _run(_walk())
    found, outcomes, _ = robustness.evaluate([run], chapters={chapter: (module, claims)}, progress=False)
    want = __import__(f"tdcourse.{module}", fromlist=["verdicts"]).verdicts(run, chapter=chapter)
    assert found == want
    for o in outcomes:
        if o.spec.primary:
            assert o.verdict == robustness._pick(want, o.spec)
    assert {o.spec.claim for o in outcomes if o.spec.primary} == set(claims)


def test_primary_specification_reproduces_the_teleport_verdicts(monkeypatch):
    from test_perturb import _flows

    run = _run(_walk(s=12))
    fl = _flows(0.03, -0.2, label=run.label)
    monkeypatch.setattr(perturb, "flow_fields", lambda r, **kw: fl)
    found, outcomes, _ = robustness.evaluate([run], chapters={"07_teleport": ("perturb", ("C13",))}, progress=False)
    assert found == perturb.verdicts(run, chapter="07_teleport", flows=fl)
    by = {(o.spec.row, o.spec.name): o.outcome for o in outcomes}
    # any shrink: 3 % pull reads as inward; at least 5 %: it does not (the C13 case)
    assert by[("C13 (arrows)", "primary")] == "agrees"
    assert by[("C13 (arrows)", "pull ≥ 5 %")] == "partly"


def test_information_chapter_and_scoreboard_share_one_unit_count():
    assert information.N_UNITS == 32
    for fn in (information.mi_profile, information.verdicts):
        assert inspect.signature(fn).parameters["n_units"].default == information.N_UNITS


def test_lowdim_ae_seed_changes_only_the_autoencoder_and_reuses_spectra():
    run = _run(_walk(n=60, s=8, d=16))
    kw = dict(n_boot=50, hidden=(8, 4), epochs=2, batch_size=128)
    base = lowdim.analyse(run, **kw)
    same = lowdim.analyse(run, ae_seed=0, spectra=(base.raw, base.std), **kw)
    np.testing.assert_array_equal(same.latent_mean, base.latent_mean)  # ae_seed=seed: the chapter's fit
    other = lowdim.analyse(run, ae_seed=1, spectra=(base.raw, base.std), **kw)
    assert other.raw is base.raw and other.std is base.std
    assert not np.array_equal(other.ae.test_idx, base.ae.test_idx)


# --------------------------------------------------------------------------- thresholds flip where they should


def test_c1_threshold_flips_between_0_8_and_0_94():
    run = _run(_walk(n=40, s=6, d=8))
    a = continuity.analyse(run.acts, n_boot=20)
    a = dataclasses.replace(a, median_r=stats.Interval(0.93, 0.92, 0.94, 0.95), null_q999=0.1)
    assert continuity.verdicts(run, analysis=a)[0].outcome == "agrees"
    hi = continuity.verdicts(run, analysis=a, high_r=0.94)[0]
    assert hi.outcome == "partly" and "above 0.94" in hi.criterion
    with pytest.raises(ValueError, match="high_r"):
        continuity.verdicts(run, analysis=a, high_r=1.2)


def _accelerating(ratio: float, n=60, s=24, d=256, seed=0) -> np.ndarray:
    """Trajectories whose step norms grow linearly so that late/early velocity is ``ratio``."""
    rng = np.random.default_rng(seed)
    k = s // 3
    t = np.arange(s - 1, dtype=float)
    # linear speed v = 1 + c t: late-third mean / early-third mean = ratio
    early, late = t[:k].mean(), t[-k:].mean()
    c = (ratio - 1) / (late - ratio * early)
    speed = 1 + c * t
    u = rng.standard_normal((n, s - 1, d))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    x = np.concatenate([rng.standard_normal((n, 1, d)), u * speed[None, :, None]], axis=1)
    return x.cumsum(1)


def test_c6_effect_size_floor_reads_a_barely_rising_velocity_as_no_acceleration():
    slow, fast = _run(_accelerating(1.12)), _run(_accelerating(4.5))
    no_floor = geometry.verdicts(slow, n_boot=200, min_ratio=None)[2]
    assert no_floor.outcome == "agrees"  # significant, but 12 %
    floored = geometry.verdicts(slow, n_boot=200)[2]
    assert floored.outcome == "disagrees" and "at least 1.5" in floored.criterion
    assert geometry.verdicts(fast, n_boot=200)[2].outcome == "agrees"
    assert geometry.MIN_VELOCITY_RATIO == 1.5


def test_skip_sites_leaves_out_the_first_layer():
    acts = _accelerating(2.0, s=12)
    acts[:, 1] += 100.0  # a huge first step: skipping the first two sites must remove it
    full = geometry.verdicts(_run(acts), n_boot=100, min_ratio=None)
    skipped = geometry.verdicts(_run(acts), n_boot=100, min_ratio=None, skip_sites=2)
    assert full[2].outcome != "agrees" and skipped[2].outcome == "agrees"
    with pytest.raises(ValueError, match="skip_sites"):
        geometry.verdicts(_run(acts), skip_sites=1)


def test_c10_spiral_factor_and_share_threshold():
    rng = np.random.default_rng(0)
    n, s, d = 30, 24, 20
    l = np.arange(s)
    grow = np.linspace(1, 5, s)  # the portrait's amplitude grows 2.6x from the first third to the last
    curves = np.sin(2 * np.pi * 3 * l / s)[None, :] * grow[None, :]
    acts = np.repeat((curves[:, :, None] * rng.uniform(0.5, 1.5, d))[None, 0], n, 0)
    acts = acts + 0.01 * rng.standard_normal((n, s, d))
    a2 = rotations.analyse(acts, n_shuffles=20, n_samples=5, n_shuffles_per_sample=5, n_shuffles_growth=20)
    a35 = rotations.analyse(acts, n_shuffles=20, n_samples=5, n_shuffles_per_sample=5, n_shuffles_growth=20,
                            factor=3.5)
    assert a2.factor == 2.0 and a35.factor == 3.5
    assert a2.shares()["outward spiral"] == 1.0 and a35.shares()["orbit"] == 1.0
    v = rotations.verdicts(_run(acts), "ch", analysis=a35)[2]
    assert "≥ 3.5×" in v.criterion
    # half orbits, half spirals: a 60 % share floor fails "both classes", a 5 % one passes
    mixed = dataclasses.replace(a2, classes=np.array(["orbit", "outward spiral"] * (d // 2), dtype=object))
    assert "Agrees if both classes hold ≥ 5%" in rotations.verdicts(_run(acts), "ch", analysis=mixed)[2].criterion
    strict = rotations.verdicts(_run(acts), "ch", analysis=mixed, min_share=0.6)[2]
    loose = rotations.verdicts(_run(acts), "ch", analysis=mixed)[2]
    assert loose.outcome in ("agrees", "partly") and strict.outcome != loose.outcome


def test_flows_inward_min_pull():
    from test_perturb import _flows

    fl = _flows(0.03, -0.2)
    assert fl.inward(0, 1).estimate > 0.5 > fl.inward(0, 1, min_pull=0.05).estimate
    with pytest.raises(ValueError, match="min_pull"):
        fl.inward(0, 1, min_pull=1.0)


# --------------------------------------------------------------------------- fragile marks and counts


def _v(claim, model, outcome, value=1.0):
    return Verdict(claim, f"paper says {claim}", "crit", model, value, "", outcome, chapter="x")


def _outcomes(outcomes_by_spec: dict[str, str], claim="C11", kind="trained", seeds: dict[str, str] | None = None):
    """Outcomes of made-up specifications: ``{name: outcome}`` (the first is the primary, the rest
    alternative definitions), then ``seeds`` ``{name: outcome}`` (resampling seeds)."""
    out = []
    for i, (name, outcome) in enumerate(outcomes_by_spec.items()):
        spec = robustness.Spec(claim, name, "d", primary=i == 0, kwargs={} if i == 0 else {"x": i})
        out.append(robustness.Outcome(spec, kind, _v(claim, "t", outcome)))
    for j, (name, outcome) in enumerate((seeds or {}).items()):
        spec = robustness.Spec(claim, name, "d", compute={"seed": j + 1}, seed=True)
        out.append(robustness.Outcome(spec, kind, _v(claim, "t", outcome)))
    return out


@pytest.mark.parametrize("n_seeds", [0, 1, 4, 25])
def test_one_flipping_definition_makes_a_verdict_fragile_whatever_the_number_of_seeds(n_seeds):
    seeds = {f"seed {i}": "disagrees" for i in range(n_seeds)}  # seeds that all agree with the primary
    outs = _outcomes({"primary": "disagrees", "threshold a": "disagrees", "threshold b": "partly",
                      "threshold c": "disagrees"}, seeds=seeds)
    r = robustness.summarise(outs)[("C11", "trained")]
    assert r.fragile and r.flips == ("threshold b → partly",)
    assert r.holds == ("threshold a", "threshold c") and r.status == "fragile"
    assert r.stable is (None if n_seeds == 0 else True)
    assert r.text.startswith("fragile: threshold b → partly")
    # the majority of the old rule (primary held by 3 of 4, or by 28 of 29) does not hide it
    assert sum(o.outcome == "disagrees" for o in outs) > len(outs) / 2


def test_a_seed_that_flips_is_instability_not_fragility():
    outs = _outcomes({"primary": "disagrees", "a": "disagrees", "b": "disagrees"},
                     seeds={"AE seed 1": "agrees", "AE seed 2": "disagrees"})
    r = robustness.summarise(outs)[("C11", "trained")]
    assert not r.fragile and r.status == "robust" and r.flips == ()
    assert r.stable is False and r.unstable == ("AE seed 1 → agrees",) and r.seeds == ("AE seed 1", "AE seed 2")
    assert r.text == "robust to 2 alternatives; unstable: AE seed 1 → agrees"


def test_a_claim_with_one_specification_is_not_tested():
    r = robustness.summarise(_outcomes({"primary": "agrees"}, seeds={"seed 1": "agrees"}))[("C11", "trained")]
    assert not r.fragile and not r.tested and r.status == "not tested"
    assert r.text.startswith("robustness not tested (0 alternatives computed)")
    one = robustness.summarise(_outcomes({"primary": "agrees", "a": "agrees"}))[("C11", "trained")]
    assert one.status == "not tested"  # one alternative that holds is not enough to call it robust
    flip = robustness.summarise(_outcomes({"primary": "agrees", "a": "partly"}))[("C11", "trained")]
    assert flip.status == "fragile"  # but one that flips is enough to call it fragile


def test_an_alternative_not_run_neither_counts_nor_hides():
    outs = _outcomes({"primary": "agrees", "a": "agrees", "b": "agrees"})
    axis = robustness.Spec("C11", "whole lines", "d", data="whole lines")
    outs.append(robustness.Outcome(axis, "trained", None, "too costly"))
    r = robustness.summarise(outs)[("C11", "trained")]
    assert r.status == "robust" and r.not_run == ("whole lines (too costly)",)


def test_threshold_margin_in_words_and_on_the_line():
    t = robustness.Threshold("outward-spiral share", 0.0503, 0.05, 0.05, percent=True)
    assert t.words() == "outward-spiral share 5.03 % against the 5 % line: 0.03 points above"
    assert t.distance < robustness.NEAR
    far = robustness.Threshold("median r's 95 % CI lower bound", 0.96, 0.8, 0.8)
    assert far.words() == "median r's 95 % CI lower bound 0.96 against the 0.8 line: 0.16 above"
    words, close = robustness._nearest([far, t])
    assert close and words.startswith("outward-spiral share 5.03 %")
    assert robustness._nearest([far]) == (far.words(), False)


def test_fragile_mark_on_scoreboard_and_landing_page():
    vs = [_v("C11", "t", "disagrees", 0.087), _v("C1", "t", "agrees", 0.9)]
    robust = robustness.summarise(
        _outcomes({"primary": "disagrees", "bend > 0.05": "agrees", "bend > 0.2": "disagrees"}) +
        _outcomes({"primary": "agrees", "r > 0.9": "agrees", "r > 0.94": "agrees"}, claim="C1"))
    md = scoreboard.to_markdown(vs, ["t"], robust, {"t": "trained"})
    c11 = next(r for r in md.splitlines() if r.startswith("| **C11**"))
    c1 = next(r for r in md.splitlines() if r.startswith("| **C1** "))
    assert "**disagrees** ✗ (0.087) ⚠ fragile" in c11 and c11.rstrip().endswith("⚠ bend > 0.05 → agrees |")
    assert "fragile" not in c1 and c1.rstrip().endswith("robust |")
    assert "The number in parentheses" in md
    text = scoreboard.findings_markdown(vs, "t", None, None, robust, {"t": "trained"})
    assert "1 of them is **fragile**" in text and ": C11 (bend > 0.05 → agrees)." in text
    page = robustness.to_markdown(_outcomes({"primary": "disagrees", "bend > 0.05": "agrees",
                                             "bend > 0.2": "disagrees"}), kinds=["trained"])
    assert "**disagrees** ✗: ⚠ fragile: bend > 0.05 → agrees" in page
    assert "| bend > 0.05 | **disagrees** ✗ (1) ⚠ flips |" not in page  # the cell shows the alternative's outcome
    assert "| bend > 0.05 | **agrees** (1) ⚠ flips |" in page
    assert "| *robust?* | fragile |" in page


def test_landing_page_counts_the_scoreboard_marks():
    """The landing page's fragile count is the number of marked cells of the scoreboard column,
    both made from robustness.marks()."""
    vs = [_v("C1", "t", "agrees"), _v("C9", "t", "agrees"), _v("C9", "t", "partly"), _v("C10", "t", "partly"),
          _v("C1", "c", "agrees"), _v("C10", "c", "agrees")]
    outs = (_outcomes({"primary": "agrees", "r > 0.94": "partly", "Spearman": "agrees"}, claim="C1") +
            _outcomes({"primary": "partly", "factor 3.5": "agrees", "share ≥ 3 %": "partly"}, claim="C10") +
            _outcomes({"primary": "agrees", "factor 2.5": "partly", "share ≥ 10 %": "partly"}, claim="C10",
                      kind="control") +
            _outcomes({"primary": "agrees", "a": "agrees", "b": "agrees"}, claim="C1", kind="control",
                      seeds={"seed 1": "partly"}))
    c9 = []  # C9's two readings: the mean trajectory flips, the per-sample one does not
    for reading, (prim, alt) in zip(("mean trajectory", "per-sample R"), (("agrees", "partly"), ("partly", "partly"))):
        for i, (name, outcome) in enumerate((("primary", prim), ("phase null", alt), ("band × 2", prim))):
            spec = robustness.Spec("C9", name, "d", primary=i == 0, reading=reading, kwargs={} if i == 0 else {"x": i})
            c9.append(robustness.Outcome(spec, "trained", _v("C9", "t", outcome)))
    robust = robustness.summarise(outs + c9)
    kinds = {"t": "trained", "c": "control"}
    md = scoreboard.to_markdown(vs, ["t", "c"], robust, kinds)
    rows = [r for r in md.splitlines() if r.startswith("| **C")]
    in_col = {col: sum(r.split(" | ")[i].count("⚠ fragile") for r in rows) for col, i in (("t", 2), ("c", 3))}
    assert in_col == {"t": 3, "c": 1}  # C1, C9 (mean trajectory), C10 on t; C10 on c; C1 on c is only unstable
    marked = robustness.marks(vs, ["t", "c"], robust, kinds)
    assert len(marked) == sum(in_col.values())
    text = scoreboard.findings_markdown(vs, "t", "c", None, robust, kinds)
    assert f"{in_col['t']} of them are **fragile**" in text
    assert f"on the control ({in_col['c']}): C10 (factor 2.5 → partly; share ≥ 10 % → partly)" in text
    assert "C9 (mean trajectory) (phase null → partly)" in text
    assert "Unstable" in text and "C1 on the control (seed 1 → partly)" in text


def test_landing_page_counts_equal_the_scoreboard_cells():
    vs = [_v("C9", "t", "agrees"), _v("C9", "t", "partly"), _v("C13", "t", "disagrees"),
          _v("C13", "t", "disagrees"), _v("C11", "t", "disagrees"), _v("C1", "t", "agrees"),
          _v("C1", "r", "agrees"), _v("C13", "r", "agrees"), _v("C13", "r", "agrees")]
    md = scoreboard.to_markdown(vs, ["t", "r"])
    col = [r.split(" | ")[2] for r in md.splitlines() if r.startswith("| **C")]
    cells = {o: sum(c.count(s) for c in col) for o, s in (("agrees", "**agrees**"), ("partly", "*partly*"),
                                                            ("disagrees", "✗"))}
    text = scoreboard.findings_markdown(vs, "t", "r", None)
    assert cells == {"agrees": 2, "partly": 1, "disagrees": 3}
    assert (f"**{cells['agrees']} agree**" in text and f"**{cells['partly']} partly**" in text
            and f"**{cells['disagrees']} disagree**" in text)
    assert "6 verdicts on 4 claims" in text and "C9, C13 read two ways" in text


# --------------------------------------------------------------------------- data axes


def test_whole_lines_recipe_gives_672_samples_and_keeps_old_cache_keys():
    lines = body_lines(load_wikitext(), 100, 500)
    assert len(lines) == 672 and all(100 <= len(t) <= 500 for t in lines)
    assert "max_chars" not in SampleRecipe().to_dict()  # the primary captures keep their key
    assert SampleRecipe(max_chars=500).to_dict()["max_chars"] == 500
    recipe, n, _ = robustness.DATA["whole lines"]
    assert n == 672 and recipe.max_chars == 500 and recipe.max_tokens >= 256
    from tdcourse.data import check_recipe

    with pytest.raises(ValueError, match="max_chars"):
        check_recipe(SampleRecipe(max_chars=50))


def test_token_25_of_48_is_the_state_of_token_25_in_the_full_sample(tiny_llama):
    """The position axis reads a 25-token prefix's last token: in a causal model that is the state of
    token 25 (index 24) of the longer sample."""
    import torch

    from tdcourse.capture import capture

    model, _ = tiny_llama
    rng = np.random.default_rng(1)
    ids = [rng.integers(3, 100, size=40).tolist() for _ in range(3)]
    prefix = capture(model, [x[:25] for x in ids], progress=False)
    full = {}

    def keep(pos, hidden):
        full[pos] = hidden[:, 24].detach().numpy().copy()

    from tdcourse.capture import residual_hooks

    with torch.inference_mode(), residual_hooks(model, keep):
        model.model(input_ids=torch.tensor(ids))
    np.testing.assert_allclose(prefix, np.stack([full[p] for p in range(prefix.shape[1])], 1), atol=1e-4)


def test_data_runs_are_left_out_with_a_reason_when_they_cannot_be_had(capsys):
    run = Activations(acts=np.zeros((4, 4, 3), np.float32), sites=site_names(2), texts=[""] * 4,
                      meta={"model": {"name": "/nonexistent/model-folder", "source": "local", "revision": None,
                                      "quant": "none", "dtype": "float32", "init": "trained", "seed": 0}})
    got = robustness.load_data_runs([run])
    assert got == {"token 25 of 48": {}}  # the build's axes only: nothing read from whatever is cached
    said = capsys.readouterr().out
    assert "'token 25 of 48', trained: not captured" in said
    with pytest.raises(ValueError, match="unknown data axes"):
        robustness.load_data_runs([run], axes=["middle"])
    with pytest.raises(ValueError, match="unknown data axes"):
        robustness.load_data_runs([run], axes=[robustness.PRIMARY_DATA])


def test_cells_not_run_say_why():
    run = _run(_walk())
    found, outcomes, _ = robustness.evaluate([run], {"token 25 of 48": {"trained": run}},
                                             chapters={"01_residual_stream": ("stationarity", ("C7",))},
                                             progress=False)
    by = {o.spec.label: o for o in outcomes}
    assert by["token 25 of 48"].verdict is not None
    assert by["whole lines"].verdict is None and "20-minute CI budget" in by["whole lines"].note
    _, outcomes, _ = robustness.evaluate([run], {"token 25 of 48": {"trained": run}},
                                         chapters={"01_residual_stream": ("stationarity", ("C7",))},
                                         progress=False, data_modules=())
    by = {o.spec.label: o for o in outcomes}
    assert by["token 25 of 48"].verdict is None and "not evaluated on the data axes" in by["token 25 of 48"].note
    page = robustness.to_markdown(outcomes, kinds=["trained"])
    assert "- not run (token 25 of 48 on trained, whole lines on trained)" not in page  # two reasons, two lines
    assert "- not run (whole lines on trained): why: see the line under the summary" in page
    assert "- not run (token 25 of 48 on trained): this chapter is not evaluated on the data axes" in page
    assert "—" not in page.split("## C7")[1]


def test_the_sequels_claims_are_marked_and_counted_in_their_own_sentence():
    """S1-S4 sit on the scoreboard too: a flipped one carries the mark, and the landing page
    counts it in the sequel's sentence, not among the paper's 13 claims."""
    vs = [_v("C1", "t", "agrees"), _v("S2", "t", "disagrees"), _v("S3", "t", "agrees"), _v("S2", "c", "disagrees")]
    outs = (_outcomes({"primary": "agrees", "r > 0.9": "agrees", "r > 0.94": "agrees"}, claim="C1") +
            _outcomes({"primary": "disagrees", "symmetric share of J": "agrees", "x": "disagrees"}, claim="S2") +
            _outcomes({"primary": "agrees", "a": "agrees", "b": "agrees"}, claim="S3") +
            _outcomes({"primary": "disagrees", "symmetric share of J": "partly", "x": "disagrees"}, claim="S2",
                      kind="control"))
    robust = robustness.summarise(outs)
    kinds = {"t": "trained", "c": "control"}
    marked = robustness.marks(vs, ["t", "c"], robust, kinds)
    assert sorted((row, col) for row, col, _ in marked) == [("S2", "c"), ("S2", "t")]
    md = scoreboard.to_markdown(vs, ["t", "c"], robust, kinds)
    s2 = next(r for r in md.splitlines() if r.startswith("| **S2**"))
    assert s2.count("⚠ fragile") == 2
    text = scoreboard.findings_markdown(vs, "t", "c", None, robust, kinds)
    paper, _, sequel = text.partition("The sequel's claims")
    assert "0 of them are **fragile**" in paper and "S2" not in paper
    assert "on **t**: **1 agree**, **0 partly**, **1 disagree**" in sequel
    assert "fragile on t (1): S2 (symmetric share of J → agrees); on the control (1): S2 (symmetric share of J → partly)." in sequel


def test_an_alternative_the_model_is_too_small_for_is_not_run_with_the_reason(tmp_path):
    """A 4-layer model: chapter 3's 'first layer left out' leaves 3 layers, too few for a trend
    over layer steps. The alternatives say so; the primary verdicts stand."""
    from test_cache_roundtrip import _tiny_folder

    from tdcourse.capture import load_activations

    run = load_activations(_tiny_folder(tmp_path / "models" / "tiny4", n_layers=4), n=60, quant="none",
                           progress=False)
    found, outcomes, _ = robustness.evaluate([run], chapters={"03_growth": ("geometry", ("C4", "C5"))},
                                             progress=False)
    assert {v.claim for v in found} >= {"C4", "C5", "C6"}
    left_out = [o for o in outcomes if o.spec.name == "first layer left out"]
    assert left_out and all(o.verdict is None for o in left_out)
    assert all(o.note.startswith("not run: Too few layers: Chapter 3's growth analysis") and "1 layer(s) left out"
               in o.note for o in left_out)
    assert all(o.verdict is not None for o in outcomes if o.spec.primary)
