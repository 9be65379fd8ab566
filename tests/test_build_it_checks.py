"""The build-it checks of chapters 5 and 6 accept the method and reject the usual mistakes (issue 21).

Each wrong answer below is a plausible learner's version of the method with one named mistake;
the check must print ✗ for it, name the mistake where it is one of the usual ones, and print ✓
for the right method (written independently of the library here).
"""

from __future__ import annotations

import numpy as np
import pytest

from tdcourse import exercises
from tdcourse import lowdim as ld
from tdcourse import rotations as rot


# --------------------------------------------------------------------------- chapter 5: R of one unit


def _wrap(d):
    return np.pi - (np.pi - d) % (2 * np.pi)


def portrait_ok(a):
    g = np.gradient(a)
    return a - a[0], g - g[0]


def r_ok(a):
    x, y = portrait_ok(np.asarray(a, dtype=float))
    theta = np.arctan2(np.diff(y), np.diff(x))
    return _wrap(np.diff(theta)).sum() / (2 * np.pi)


def r_unwrapped(a):  # angle differences not wrapped
    x, y = portrait_ok(a)
    return np.diff(np.arctan2(np.diff(y), np.diff(x))).sum() / (2 * np.pi)


def r_point_angle(a):  # the angle of the point, atan2(y, x), instead of the tangent
    x, y = portrait_ok(a)
    return _wrap(np.diff(np.arctan2(y, x))).sum() / (2 * np.pi)


def r_point_angle_uncentred(a):  # the same, and no centring on the first site
    return _wrap(np.diff(np.arctan2(np.gradient(a), a))).sum() / (2 * np.pi)


def r_np_diff(a):  # np.diff instead of np.gradient: n - 1 velocities, x cut to match
    v = np.diff(a)
    x, y = a[1:] - a[1], v - v[0]
    return _wrap(np.diff(np.arctan2(np.diff(y), np.diff(x)))).sum() / (2 * np.pi)


def r_np_diff_padded(a):  # np.diff padded to n values instead of np.gradient
    y = np.diff(a, prepend=a[0])
    return _wrap(np.diff(np.arctan2(np.diff(y), np.diff(a)))).sum() / (2 * np.pi)


def r_swapped(a):  # atan2(Δx, Δy): the sign convention flipped
    x, y = portrait_ok(a)
    return _wrap(np.diff(np.arctan2(np.diff(x), np.diff(y)))).sum() / (2 * np.pi)


def portrait_uncentred(a):  # no centring on the first site
    return a, np.gradient(a)


def portrait_mean_centred(a):  # centred on the mean over the sites
    g = np.gradient(a)
    return a - a.mean(), g - g.mean()


def portrait_np_diff(a):  # np.diff padded instead of np.gradient
    return a - a[0], np.diff(a, prepend=a[0])


def test_rotation_check_accepts_the_method(capsys):
    assert rot.check_rotation_count(r_ok, portrait=portrait_ok)
    out = capsys.readouterr().out
    assert "All checks passed." in out and "✗" not in out
    assert max(len(line) for line in out.splitlines()) <= exercises.WIDTH


def test_rotation_check_accepts_a_version_for_many_curves_but_only_the_chapters_wrap():
    # the library's own function (vectorised, another formula for the same angle)
    assert rot.check_rotation_count(rot.rotation_count, portrait=rot.phase_portrait)
    # (d + π) % 2π − π maps into [−π, π): it differs from (−π, π] only at an exact reversal,
    # which the zigzag case has (tests/test_ch5_checks.py checks that the mistake is named)
    assert not rot.check_rotation_count(
        lambda a: ((np.diff(np.arctan2(np.diff(np.gradient(a)), np.diff(a))) + np.pi) % (2 * np.pi) - np.pi).sum()
        / (2 * np.pi))


def test_centring_cannot_change_r_so_the_portrait_carries_it():
    """R uses differences of points only: an uncentred portrait gives the same R on every curve,
    so the check accepts that R and rejects the uncentred portrait itself."""
    def r_uncentred(a):
        x, y = portrait_uncentred(a)
        return _wrap(np.diff(np.arctan2(np.diff(y), np.diff(x)))).sum() / (2 * np.pi)

    for _, a in rot._rotation_cases():
        assert r_uncentred(a) == pytest.approx(r_ok(a), abs=1e-9)
    assert rot.check_rotation_count(r_uncentred)
    assert not rot.check_rotation_count(r_uncentred, portrait=portrait_uncentred)


@pytest.mark.parametrize("wrong, named", [
    (r_unwrapped, "not wrapped"),
    (r_point_angle, "angle of the point, atan2(y, x), not of the step"),
    (r_point_angle_uncentred, "not centred on the first site"),
    (r_np_diff, "np.diff(a) (n − 1 forward differences)"),
    (r_np_diff_padded, "np.diff(a, prepend=a[0])"),
    (r_swapped, "x and y are swapped"),
])
def test_rotation_check_rejects_and_names_the_usual_mistakes(capsys, wrong, named):
    assert not rot.check_rotation_count(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and "Some checks failed" in out
    assert named in " ".join(out.split())


@pytest.mark.parametrize("wrong, named", [
    (portrait_uncentred, "not centred on the first site"),
    (portrait_mean_centred, "centred on its mean"),
    (portrait_np_diff, "np.diff(a, prepend=a[0])"),
])
def test_rotation_check_rejects_a_wrong_portrait(capsys, wrong, named):
    assert not rot.check_rotation_count(r_ok, portrait=wrong)
    out = " ".join(capsys.readouterr().out.split())
    assert "✗ portrait of" in out and named in out


def test_every_listed_rotation_mistake_is_rejected():
    for desc, wrong in rot._R_MISTAKES:
        assert not rot.check_rotation_count(wrong), desc
    for desc, wrong in rot._PORTRAIT_MISTAKES:
        assert not rot.check_rotation_count(r_ok, portrait=wrong), desc


def test_rotation_check_reports_a_crash_instead_of_raising(capsys):
    assert not rot.check_rotation_count(lambda a: 1 / 0, portrait=lambda a: (a,))
    assert "ZeroDivisionError" in capsys.readouterr().out


# --------------------------------------------------------------------------- chapter 6: participation ratio


def pr_ok(x):
    x = np.asarray(x, dtype=float)
    x = x - x.mean(axis=0)
    g = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T  # same non-zero eigenvalues
    lam = np.linalg.eigvalsh(g).clip(min=0)
    return lam.sum() ** 2 / (lam**2).sum()


def pr_uncentred(x):
    lam = np.linalg.eigvalsh(x.T @ x)
    return lam.sum() ** 2 / (lam**2).sum()


def pr_singular_values(x):
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    return s.sum() ** 2 / (s**2).sum()


def pr_inverted(x):
    lam = np.linalg.eigvalsh(np.cov(x.T))
    return (lam**2).sum() / lam.sum() ** 2


def pr_wrong_axis(x):
    lam = np.linalg.eigvalsh(np.cov(x))
    return lam.sum() ** 2 / (lam**2).sum()


def test_pr_check_accepts_the_method(capsys):
    assert ld.check_participation_ratio(pr_ok)
    assert ld.check_participation_ratio(lambda x: ld.participation_ratio(np.linalg.eigvalsh(np.cov(x.T))))
    out = capsys.readouterr().out
    assert "✗" not in out and max(len(line) for line in out.splitlines()) <= exercises.WIDTH


@pytest.mark.parametrize("wrong, named", [
    (pr_uncentred, "not centred"),
    (pr_singular_values, "singular values s of x, not their squares"),
    (pr_inverted, "upside down"),
    (pr_wrong_axis, "wrong axis"),
])
def test_pr_check_rejects_and_names_the_usual_mistakes(capsys, wrong, named):
    assert not ld.check_participation_ratio(wrong)
    out = " ".join(capsys.readouterr().out.split())
    assert "✗" in out and named in out


def test_the_uncentred_pr_of_the_issue_is_rejected_on_every_offset_case(capsys):
    """Issue 21: the old check passed an uncentred PR (its cases had mean 0)."""
    ld.check_participation_ratio(pr_uncentred)
    out = capsys.readouterr().out
    assert out.count("✗") >= 3


def test_every_listed_pr_mistake_is_rejected():
    for desc, wrong in ld._PR_MISTAKES:
        assert not ld.check_participation_ratio(wrong), desc


# --------------------------------------------------------------------------- chapter 6: the training step


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def step_ok(model, opt, xb):
    loss = ((model(xb) - xb) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def step_no_zero_grad(model, opt, xb):
    loss = ((model(xb) - xb) ** 2).mean()
    loss.backward()
    opt.step()
    return loss


def step_no_step(model, opt, xb):
    loss = ((model(xb) - xb) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    return loss.item()


def step_zero_grad_after_backward(model, opt, xb):
    loss = ((model(xb) - xb) ** 2).mean()
    loss.backward()
    opt.zero_grad()
    opt.step()
    return loss


def test_training_check_accepts_the_method(torch, capsys):
    import torch.nn.functional as F

    assert ld.check_training_step(step_ok)

    def with_mse_loss(model, opt, xb):  # torch's own MSE: the same loss, rounded otherwise
        loss = F.mse_loss(model(xb), xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)

    assert ld.check_training_step(with_mse_loss)
    out = capsys.readouterr()
    assert "✗" not in out.out and "Warning" not in out.err


@pytest.mark.parametrize("wrong, named", [
    (step_no_zero_grad, "opt.zero_grad() is never called"),
    (step_no_step, "the weights never change"),
    (step_zero_grad_after_backward, "the weights never change"),
])
def test_training_check_rejects_and_names_the_usual_mistakes(torch, capsys, wrong, named):
    assert not ld.check_training_step(wrong)
    out = " ".join(capsys.readouterr().out.split())
    assert "✗" in out and named in out


def test_training_check_on_real_shaped_states(torch, capsys):
    """A second case with the caller's states (here random ones of a capture's layout)."""
    acts = np.random.default_rng(1).standard_normal((12, 8, 24)).astype(np.float32).cumsum(1)
    assert ld.check_training_step(step_ok, acts=acts)
    assert not ld.check_training_step(step_no_zero_grad, acts=acts)
    assert "12 real samples × 8 sites × 24 units" in capsys.readouterr().out
    with pytest.raises(ValueError, match="n_samples >= 4"):
        ld.check_training_step(step_ok, acts=acts[:2])


def test_train_autoencoder_step_argument(torch):
    acts = ld._plane_rows(n=20)
    lib = ld.train_autoencoder.__wrapped__(acts, epochs=2, batch_size=16, seed=0)
    mine = ld.train_autoencoder.__wrapped__(acts, epochs=2, batch_size=16, seed=0, step=step_ok)
    np.testing.assert_allclose(mine.loss, lib.loss, rtol=1e-4)
    with pytest.raises(ValueError, match="balance_sites"):
        ld.train_autoencoder.__wrapped__(acts, epochs=1, step=step_ok, balance_sites=True)
    with pytest.raises(ValueError, match="callable"):
        ld.train_autoencoder.__wrapped__(acts, epochs=1, step="adam")


# --------------------------------------------------------------------------- the shared helpers


def test_which_mistake_names_the_first_fitting_mistake_and_none_otherwise():
    cases = [(np.arange(4.0),), (np.ones(3),)]
    mistakes = [("doubles", lambda a: 2 * a), ("adds one", lambda a: a + 1), ("raises", lambda a: 1 / 0)]
    assert exercises.which_mistake(lambda a: a + 1, cases, mistakes) == "adds one"
    assert exercises.which_mistake(lambda a: a - 1, cases, mistakes) is None
    assert exercises.which_mistake(lambda a: 1 / 0, cases, mistakes) is None


def test_run_case_says_where_an_answer_first_differs():
    desc, ok, msg = exercises.run_case("x", lambda: np.array([1.0, 2.0, 3.5]), (), np.array([1.0, 2.0, 3.0]))
    assert not ok and "first difference at index 2: expected 3, got 3.5" in msg
    desc, ok, msg = exercises.run_case("x", lambda: 7.982, (), 7.9815)
    assert not ok and msg == "expected 7.9815, got 7.982"
