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
    rob = {("C11", "m"): Robustness("C11", "trained", "disagrees", holds=("bend > 0.05", "bend > 0.2")),
           ("C11", "m · ctl"): Robustness("C11", "control", "partly", flips=("bend > 0.2 → disagrees",),
                                          holds=("bend > 0.05",))}
    text = " ".join(verdicts.findings(found, robustness=rob).paragraphs)
    assert "C11 on m: robust to 2 alternatives" in text
    assert "C11 on m · ctl: fragile: bend > 0.2 → disagrees" in text
    # not computed for these captures: said, not silently left out
    assert "has not been computed" in " ".join(verdicts.findings(found, robustness={}).paragraphs)
    assert not any("robust" in p for p in verdicts.findings(found).paragraphs)


def test_summary_kept_per_capture_and_read_back_only_for_the_same_captures():
    runs = [_run(0), _run(1, "random")]
    summ = {("C1", "trained"): Robustness("C1", "trained", "agrees", flips=("r > 0.94 → partly",), holds=("r > 0.9",),
                                          seeds=("seed 1",), margin="median r 0.95 against the 0.94 line: 0.01 above",
                                          close=True),
            ("C1", "control"): Robustness("C1", "control", "agrees", holds=("r > 0.9", "r > 0.94"))}
    robustness.save_summary(runs, summ)
    back = robustness.for_runs(runs)
    assert back[("C1", runs[0].label)] == summ[("C1", "trained")]
    got = back[("C1", runs[0].label)]
    assert got.fragile and got.flips == ("r > 0.94 → partly",) and got.stable is True and got.close
    assert got.text == ("fragile: r > 0.94 → partly; stable over 1 seed; on the line: median r 0.95 against the "
                        "0.94 line: 0.01 above")
    assert back[("C1", runs[1].label)].status == "robust" and back[("C1", runs[1].label)].stable is None
    assert robustness.for_runs([_run(7)]) == {}  # another capture: nothing claimed for it
    # a file of the old format (counts of a majority rule) is not read as the new rule
    robustness._summary_file().write_text('[{"row": "C1", "capture": "x", "n": 6, "same": 5, "agrees": 5}]')
    assert robustness.for_runs(runs) == {}
