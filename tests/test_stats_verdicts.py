from __future__ import annotations

import numpy as np
import pytest

from tdcourse import stats, verdicts


def test_bootstrap_ci_covers_the_mean():
    x = np.random.default_rng(0).normal(3.0, 1.0, size=400)
    ci = stats.bootstrap_ci(x, n_boot=500)
    assert ci.lo < 3.0 < ci.hi and ci.hi - ci.lo < 0.3


def test_proportion_ci():
    ci = stats.proportion_ci(50, 100)
    assert ci.lo == pytest.approx(0.404, abs=0.002) and ci.hi == pytest.approx(0.596, abs=0.002)


def test_permutation_pvalue():
    null = np.arange(99)
    assert stats.permutation_pvalue(1000, null) == pytest.approx(1 / 100)
    assert stats.permutation_pvalue(-1, null) == 1.0
    assert stats.permutation_pvalue(-1, null, "less") == pytest.approx(1 / 100)


def test_spearman_rows():
    y = np.array([[1, 2, 3, 4], [4, 3, 2, 1], [1, 3, 2, 4]], float)
    np.testing.assert_allclose(stats.spearman_rows(y), [1, -1, 0.8])
    with pytest.raises(ValueError, match="2-D"):
        stats.spearman_rows(np.ones(3))


def test_judge_and_roundtrip(monkeypatch, tmp_path):
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path))
    v = verdicts.judge("C1", "units correlate", "median r > 0.9", "m", 0.95, agrees=True, uncertainty="null 0.01")
    w = verdicts.judge("C2", "rises", "slope > 0 for > 50 %", "m", 0.4, agrees=False, partly=True)
    u = verdicts.judge("C3", "x", "y", "m", 0.1, agrees=False)
    assert (v.outcome, w.outcome, u.outcome) == ("agrees", "partly", "disagrees")
    verdicts.save([v, w], "ch")
    back = verdicts.load_all()
    assert [b.claim for b in back] == ["C1", "C2"] and back[0].chapter == "ch"
    assert list(verdicts.table(back).data["outcome"]) == ["agrees", "partly"]
    with pytest.raises(ValueError):
        verdicts.Verdict("C1", "", "", "m", 0.0, "", "maybe")
