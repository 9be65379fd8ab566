"""bitsandbytes' misleading note about an optional hub kernel is dropped at a 4-bit load; its other
messages pass."""

from __future__ import annotations

import logging
import subprocess
import sys

from tdcourse.models import _DropHubKernelNote, _quiet_bitsandbytes_hub_kernel


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("bitsandbytes.backends.cpu.ops", logging.WARNING, __file__, 1, msg, (), None)


def test_the_filter_drops_only_the_hub_kernel_note():
    f = _DropHubKernelNote()
    assert not f.filter(_record("Failed to load CPU gemm_4bit_forward from kernels-community: no network. "
                                "Please make sure you already `pip install kernels`"))
    assert f.filter(_record("some other bitsandbytes warning"))


def test_installed_once_and_the_import_prints_no_note():
    _quiet_bitsandbytes_hub_kernel()
    _quiet_bitsandbytes_hub_kernel()
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert sum(isinstance(f, _DropHubKernelNote) for f in logger.filters) == 1
    code = ("from tdcourse.models import _quiet_bitsandbytes_hub_kernel as q; q(); import bitsandbytes; "
            "import logging; logging.getLogger('bitsandbytes.backends.cpu.ops').warning('other note')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "kernels-community" not in out.stderr and "other note" in out.stderr
