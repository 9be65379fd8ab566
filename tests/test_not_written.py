"""Every ``check_…`` of a build-it step or exercise that does not go through
``exercises.run_case`` still says "Not written yet" for an unfilled template (a body ``...``
returning None, ``return ...``, or ``raise NotImplementedError``), in one line, instead of an
error about ``NoneType`` or a ``shape ()``; and ``exercises.yours_or`` stands the library in for
such a template at scale."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tdcourse import continuity, exercises, hooks_exercise, lowdim, perturb


def returns_none(*args):
    ...


def returns_ellipsis(*args):
    return ...


def raises(*args):
    raise NotImplementedError("your code here")


TEMPLATES = [returns_none, returns_ellipsis, raises]
NOT_WRITTEN_LINE = "Not written yet: your function returns None on every case"


def _says_not_written(out: str) -> None:
    text = out.replace("\n  ", " ")
    assert text.startswith(NOT_WRITTEN_LINE), text
    assert "NoneType" not in text and "ellipsis" not in text and "shape ()" not in text, text
    assert "✗" not in text, text  # one line for the whole check, no case lines


def test_unwritten_reads_values_and_errors():
    assert exercises.unwritten(None) and exercises.unwritten(...)
    assert exercises.unwritten(NotImplementedError())
    for bad in (None, ...):
        with pytest.raises(TypeError) as err:
            float(bad)
        assert exercises.unwritten(err.value)
    assert not exercises.unwritten(0.0) and not exercises.unwritten(np.zeros(3))
    assert not exercises.unwritten(ZeroDivisionError("division by zero"))
    assert not exercises.unwritten(TypeError("unsupported operand type(s) for +: 'int' and 'str'"))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("check", [perturb.check_recovery_ratio, perturb.check_shift_in_plane,
                                   continuity.check_uncorrelated_write_r], ids=lambda f: f.__name__)
def test_numeric_checks_say_not_written(check, template, capsys):
    assert check(template) is False
    _says_not_written(capsys.readouterr().out)


def test_numeric_checks_still_report_a_learners_bug(capsys):
    """A real error, or a wrong value, is still named as before."""
    assert not perturb.check_recovery_ratio(lambda dist, k: 1 / 0)
    assert "raised ZeroDivisionError" in capsys.readouterr().out
    assert not perturb.check_shift_in_plane(lambda plane, state, coords: 1 / 0)
    assert "raised ZeroDivisionError" in capsys.readouterr().out
    assert not perturb.check_shift_in_plane(lambda plane, state, coords: np.zeros(3))
    assert "✗ shape (m, d_model)" in capsys.readouterr().out
    assert not continuity.check_uncorrelated_write_r(lambda g: g)
    assert "expected [1.0, 0.995" in capsys.readouterr().out
    assert continuity.check_uncorrelated_write_r(lambda g: 1 / np.sqrt(1 + g**2))
    assert "✓ correct" in capsys.readouterr().out


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda f: f.__name__)
def test_training_step_says_not_written(template, capsys):
    assert lowdim.check_training_step(template) is False
    _says_not_written(capsys.readouterr().out)


def _hook_count(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda f: f.__name__)
def test_check_inject_says_not_written(tiny_llama, template, capsys):
    model, ids = tiny_llama
    vec = np.random.default_rng(0).normal(size=model.config.hidden_size).astype(np.float32)
    before = _hook_count(model)
    assert perturb.check_inject(template, model, ids[1], 1, vec) is False
    _says_not_written(capsys.readouterr().out)
    assert _hook_count(model) == before


def test_check_inject_a_missing_return_with_a_hook_left_is_not_a_template(tiny_llama, capsys):
    """A function that registers a hook and returns nothing is not an unfilled template: the
    check goes on and removes the hook it left, saying so."""
    model, ids = tiny_llama
    vec = np.random.default_rng(0).normal(size=model.config.hidden_size).astype(np.float32)
    before = _hook_count(model)

    def forgets(model, input_ids, layer, vector):
        model.model.layers[layer].register_forward_pre_hook(lambda module, args: None)
        model(input_ids)

    assert not perturb.check_inject(forgets, model, ids[1], 1, vec)
    out = capsys.readouterr().out.replace("\n  ", " ")
    assert not out.startswith("Not written yet") and "a hook is still registered" in out, out
    assert _hook_count(model) == before


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda f: f.__name__)
def test_check_residual_hooks_says_not_written(tiny_llama, template, capsys):
    model, ids = tiny_llama
    assert hooks_exercise.check_residual_hooks(template, model, ids[:2]) is False
    _says_not_written(capsys.readouterr().out)


def test_yours_or_stands_in_for_every_kind_of_template(capsys):
    lib = functools.partial(np.linalg.norm, axis=-1)
    for template in TEMPLATES:
        used = exercises.yours_or(template, lib, np.ones((2, 3)))
        assert used.stand_in is lib and np.array_equal(used(np.ones((2, 3))), lib(np.ones((2, 3))))
        out = capsys.readouterr().out.replace("\n  ", " ")
        assert f"{template.__name__} is not written yet" in out
        assert "numpy.linalg.norm(…, axis=-1) stands in for it below" in out, out

    def mine(x):
        return x.sum()

    assert exercises.yours_or(mine, lib, np.ones(3)) is mine
    bug = lambda x: 1 / 0  # noqa: E731
    assert exercises.yours_or(bug, lib, 1.0) is bug  # a real bug shows where it is used
    assert capsys.readouterr().out == ""


def test_whose_names_the_stand_in_not_the_learner(capsys):
    """The at-scale line never calls the library's results the learner's (a learner who skipped
    the solution read 'my_adjacent_corr and continuity.adjacent_corr agree to 16 decimal places')."""
    from tdcourse import continuity

    def my_adjacent_corr(acts):
        ...

    used = exercises.yours_or(my_adjacent_corr, continuity.adjacent_corr, np.ones((4, 3, 2)))
    capsys.readouterr()
    assert exercises.whose(used, "my_adjacent_corr") == (
        "continuity.adjacent_corr (standing in: my_adjacent_corr is not written yet)")

    def written(acts):
        return continuity.adjacent_corr(acts)

    assert exercises.whose(exercises.yours_or(written, continuity.adjacent_corr, np.ones((4, 3, 2))),
                           "my_adjacent_corr") == "my_adjacent_corr"


def test_yours_or_names_a_notebook_function_without_main():
    def stand_in(x):
        return x

    stand_in.__module__ = "__main__"
    assert exercises._name(stand_in) == "stand_in"
    assert exercises._name(lowdim.participation_ratio) == "lowdim.participation_ratio"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("check", ["check_layer_jacobian", "check_knob"])
def test_chapter_8_checks_say_not_written(check, template, capsys):
    from tdcourse import jacobians

    assert getattr(jacobians, check)(template) is False
    out = capsys.readouterr().out
    # check_layer_jacobian first prints how close its reference is to finite differences
    _says_not_written("".join(line + "\n" for line in out.splitlines() if not line.startswith("  reference")))


# Every check a chapter hands the learner's function alone (the build-its and the exercises):
# the whole kind, run_case or not, says "Not written yet" for each template.
from tdcourse import geometry, information, jacobians, rotations, stationarity  # noqa: E402

ONE_FUNCTION_CHECKS = [
    stationarity.check_site_means, stationarity.check_drift_ratio, stationarity.check_first_crossing,
    continuity.check_adjacent_corr, continuity.check_uncorrelated_write_r,
    geometry.check_hoyer_density, geometry.check_velocity, geometry.check_fraction_above,
    geometry.check_cosine_from_norms,
    information.check_gaussian_mi, information.check_binned_mi,
    rotations.check_rotation_count, rotations.check_amplitude_growth,
    lowdim.check_participation_ratio, lowdim.check_training_step, lowdim.check_bend_ratio,
    perturb.check_recovery_ratio, perturb.check_shift_in_plane,
    jacobians.check_layer_jacobian, jacobians.check_effective_rank, jacobians.check_symmetric_share,
    jacobians.check_knob,
]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("check", ONE_FUNCTION_CHECKS, ids=lambda f: f"{f.__module__.split('.')[-1]}.{f.__name__}")
def test_every_one_function_check_says_not_written(check, template, capsys):
    assert check(template) is False
    text = capsys.readouterr().out.replace("\n  ", " ")
    # a check may first say what its reference is (chapter 8's finite differences)
    _says_not_written(text[text.index("Not written yet"):] if "Not written yet" in text else text)


def test_bend_ratio_check_still_names_a_wrong_value(capsys):
    assert lowdim.check_bend_ratio(lambda path: 0.5) is False
    out = capsys.readouterr().out.replace("\n  ", " ")
    assert "got 0.5, expected 0.2071" in out and "✓ half circle" in out
    assert lowdim.check_bend_ratio(lowdim.bend_ratio) is True
