"""Chapter 7's "build it" part: ``perturb.check_inject`` accepts the injection hook and rejects the
usual wrong ones (issue 21), on a tiny random Llama (one forward pass per case, well under a second)."""

from __future__ import annotations

import numpy as np
import pytest

from tdcourse import perturb


def _teleporter(where="pre", positions="last", how="replace", offset=0, remove="finally", clone=True):
    """A learner's ``my_teleport(model, input_ids, layer, vector) -> logits``, right by default,
    with one mistake switched on by an argument."""

    def put(hidden, vector):
        hidden = hidden.clone() if clone else hidden
        sel = {"last": (slice(None), -1), "first": (slice(None), 0), "all": (slice(None), slice(None))}[positions]
        hidden[sel] = hidden[sel] + vector if how == "add" else vector
        return hidden

    def pre_hook(module, args, kwargs):
        return (put(args[0], vector_box[0]), *args[1:]), kwargs

    def post_hook(module, args, output):
        return put(output, vector_box[0]) if not isinstance(output, tuple) else (put(output[0], vector_box[0]),
                                                                                 *output[1:])

    vector_box = [None]

    def my_teleport(model, input_ids, layer, vector):
        vector_box[0] = vector
        block = model.model.layers[layer + offset]
        if where == "pre":
            handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
        else:
            handle = block.register_forward_hook(post_hook)
        if remove == "finally":
            try:
                return model(input_ids).logits
            finally:
                handle.remove()
        out = model(input_ids).logits
        if remove == "after":  # not in finally: left behind when the forward pass raises
            handle.remove()
        return out

    return my_teleport


def _vector(model, ids, layer, seed=0):
    """A state unlike the prompt's own at ``layer`` (what a far grid point is)."""
    nat = perturb.teleport(model, ids, 0, None)
    rng = np.random.default_rng(seed)
    return (nat.states[0, 2 * layer] + 3 * rng.normal(size=nat.states.shape[-1])).astype(np.float32)


def _hooks(model):
    """Hooks on the model: the shared session model may already carry transformers' own (its output
    recorder registers forward hooks the first time a test asks for ``output_hidden_states``), so
    tests compare this count before and after, never with zero."""
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_check_inject_accepts_the_hook(tiny_llama, layer, capsys):
    model, ids = tiny_llama
    vec = _vector(model, ids[1], layer)
    before = _hooks(model)
    assert perturb.check_inject(_teleporter(), model, ids[1], layer, vec)
    out = capsys.readouterr().out
    assert "✗" not in out and "All checks passed" in out and out.count("✓") == 7
    assert max(len(line) for line in out.splitlines()) <= 68  # fits the book's column
    # modifying the incoming tensor in place is fine as well
    assert perturb.check_inject(_teleporter(clone=False), model, ids[1], layer, vec)
    assert _hooks(model) == before


WRONG = {
    # mistake: (learner's function, the ✗ lines the check must print)
    "every position replaced": (_teleporter(positions="all"), ["other positions of layer 1's input",
                                                               "replace hidden[:, -1] only"]),
    "the first token instead of the last": (_teleporter(positions="first"), ["went to position 0"]),
    "injected at layer l + 1": (_teleporter(offset=1), ["computes from the vector", "ran on the original state"]),
    "injected at the layer's output": (_teleporter(where="post"), ["computes from the vector",
                                                                    "shows up as layer 1's output"]),
    "added instead of replaced": (_teleporter(how="add"), ["plus the vector: replace the state"]),
    "hook never removed": (_teleporter(remove="never"), ["removed when the function returns",
                                                         "next forward pass is still perturbed",
                                                         "removed when the forward pass fails"]),
    "hook removed, but not in finally": (_teleporter(remove="after"), ["removed when the forward pass fails"]),
    "injected at layer l - 1": (_teleporter(offset=-1), ["layers before layer 1 are unchanged"]),
}


@pytest.mark.parametrize("mistake", list(WRONG))
def test_check_inject_rejects_the_usual_mistakes(tiny_llama, mistake, capsys):
    model, ids = tiny_llama
    fn, expected = WRONG[mistake]
    vec = _vector(model, ids[1], 1)
    before = _hooks(model)
    assert not perturb.check_inject(fn, model, ids[1], 1, vec)
    out = capsys.readouterr().out
    lines = out.replace("\n  ", " ").splitlines()  # a case's wrapped line, whole again
    failed = "\n".join(line for line in lines if line.startswith("✗"))
    for phrase in expected:
        assert phrase in failed, f"{mistake}: no ✗ line says {phrase!r}:\n{out}"
    assert "Some checks failed" in out
    assert _hooks(model) == before  # what the learner left behind is gone: later cells run unperturbed
    # and the model runs as before
    nat = perturb.teleport(model, ids[1], 0, None)
    np.testing.assert_allclose(nat.logprobs, perturb.teleport(model, ids[1], 0, None).logprobs)


def test_check_inject_reports_a_function_that_raises(tiny_llama, capsys):
    model, ids = tiny_llama

    def broken(model, input_ids, layer, vector):
        raise RuntimeError("oops")

    assert not perturb.check_inject(broken, model, ids[1], 1, _vector(model, ids[1], 1))
    assert "raised RuntimeError: oops" in capsys.readouterr().out


def test_check_inject_refuses_bad_inputs_of_its_own(tiny_llama):
    model, ids = tiny_llama
    fn = _teleporter()
    with pytest.raises(ValueError, match="out of range"):
        perturb.check_inject(fn, model, ids[1], 3, np.zeros(64))
    with pytest.raises(ValueError, match=r"shape \(64,\)"):
        perturb.check_inject(fn, model, ids[1], 1, np.zeros(63))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perturb.check_inject(fn, model, ids[1][:1], 1, np.zeros(64))
    with pytest.raises(ValueError, match="NaN"):
        perturb.check_inject(fn, model, ids[1], 1, np.full(64, np.nan))


def test_report_wraps_at_the_books_column(capsys):
    from tdcourse.exercises import report

    long = ("a case whose description runs well past the sixty-eight characters of the book's column", True, "")
    assert report([long], width=200)  # a wide width: one line per case
    assert capsys.readouterr().out.splitlines()[0] == "✓ " + long[0]
    assert not report([long, ("a short one", False, "why " * 30)])  # the default: 68 characters
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 68 and lines[1].startswith("  ") and lines[-1].startswith("Some checks failed")
