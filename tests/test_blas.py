"""Products through torch's BLAS (:mod:`tdcourse.blas`) equal numpy's to rounding."""

from __future__ import annotations

import numpy as np
import pytest

from tdcourse.blas import matmul


@pytest.mark.parametrize("da, db", [("float64", "float64"), ("complex128", "complex128"), ("float64", "complex128"),
                                    ("float32", "float32"), ("float32", "float64")])
def test_matmul_equals_numpy_in_numpys_dtype(da, db):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((37, 50)).astype(da)
    b = rng.standard_normal((50, 23)).astype(db)
    if np.iscomplexobj(a):
        a = a + 1j * rng.standard_normal(a.shape)
    want = a @ b
    got = matmul(a, b)
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = 1e-5 if want.dtype == np.float32 else 1e-12  # float32: another kernel's last bits
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_matmul_takes_strided_views_and_refuses_shapes_that_do_not_chain():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((60, 40))
    np.testing.assert_allclose(matmul(a[::2].T, a[::2]), a[::2].T @ a[::2], rtol=1e-12)
    with pytest.raises(ValueError, match=r"\(m, k\) and \(k, n\)"):
        matmul(a, a)
    with pytest.raises(ValueError, match=r"\(m, k\) and \(k, n\)"):
        matmul(a[0], a)


def test_eigvals_equal_numpys_and_keep_real_ones_real():
    from tdcourse.blas import eigvals

    rng = np.random.default_rng(2)
    a = rng.standard_normal((60, 60))
    got, want = eigvals(a), np.linalg.eigvals(a)
    assert got.dtype == np.complex128 and got.shape == (60,)
    key = lambda v: np.lexsort((np.round(v.imag, 8), np.round(v.real, 8)))  # noqa: E731
    np.testing.assert_allclose(got[key(got)], want[key(want)], rtol=1e-9, atol=1e-9)
    assert np.sum(got.imag == 0) == np.sum(want.imag == 0)  # the complex share counts the same values
    with pytest.raises(ValueError, match="square"):
        eigvals(a[:, :5])
