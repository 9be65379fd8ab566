"""A chapter's "what we found" says how robust its verdicts are, and marks fragile ones."""

from __future__ import annotations

import numpy as np

from tdcourse import robustness, verdicts
from tdcourse.capture import Activations
from tdcourse.robustness import Robustness


def _run(label_seed: int, init: str = "trained") -> Activations:
    spec = {"name": "m", "source": "m", "revision": None, "quant": "none", "dtype": "float32", "init": init,
            "seed": label_seed, "init_device": None}
    return Activations(acts=np.zeros((2, 2, 2), np.float32), sites=["resid_pre.0", "resid_mid.0"], texts=["a", "b"],
                       meta={"model": spec, "n": label_seed})


def _verdict(claim, model, outcome):
    return verdicts.Verdict(claim=claim, paper="p", criterion="c", model=model, value=1.0, uncertainty="", outcome=outcome)


def test_fragile_verdicts_are_marked_and_counts_given():
    found = [_verdict("C11", "m", "disagrees"), _verdict("C11", "m · ctl", "partly")]
    rob = {("C11", "m"): Robustness("C11", "trained", "disagrees", 5, 5, 0),
           ("C11", "m · ctl"): Robustness("C11", "control", "partly", 5, 2, 3)}
    text = " ".join(verdicts.findings(found, robustness=rob).paragraphs)
    assert "C11 on m: disagrees in 5 of 5" in text and "C11 on m · ctl: partly in 2 of 5" in text
    assert "FRAGILE: C11 on m · ctl" in text and "FRAGILE: C11 on m," not in text
    # not computed for these captures: said, not silently left out
    assert "has not been computed" in " ".join(verdicts.findings(found, robustness={}).paragraphs)
    assert not any("robust" in p for p in verdicts.findings(found).paragraphs)


def test_summary_kept_per_capture_and_read_back_only_for_the_same_captures():
    runs = [_run(0), _run(1, "random")]
    summ = {("C1", "trained"): Robustness("C1", "trained", "agrees", 6, 5, 5),
            ("C1", "control"): Robustness("C1", "control", "agrees", 6, 6, 6)}
    robustness.save_summary(runs, summ)
    back = robustness.for_runs(runs)
    assert back[("C1", runs[0].label)].text == "agrees in 5 of 6"
    assert back[("C1", runs[1].label)].same == 6
    assert robustness.for_runs([_run(7)]) == {}  # another capture: nothing claimed for it
