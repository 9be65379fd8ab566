"""The Colab walk (issue 21): one way to switch to Llama 3.1 8B, said in the same words everywhere;
the install cell stops with one message when an install fails; no red tqdm warning in Jupyter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SWITCH = '# tdcourse.use_model("llama-3.1-8b")'
#: The words every page uses for the switch.
SAY = 'uncomment `tdcourse.use_model("llama-3.1-8b")`'


def _cells(nb: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"]]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_settings_cell_has_the_switch_where_it_must_go(nb):
    settings = _cells(nb)[2]
    lines = settings.splitlines()
    assert lines.count(SWITCH) == 1, f"{nb.name}: the settings cell needs the commented line {SWITCH}"
    assert lines[lines.index(SWITCH) + 1].startswith("MODEL, N = tdcourse.course_settings()"), \
        "the switch goes right before the settings are read"


def test_one_way_to_switch_said_the_same_everywhere():
    pages = {p.relative_to(ROOT).as_posix(): p.read_text() for p in
             [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "book").glob("*.md"))]}
    pages |= {nb.relative_to(ROOT).as_posix(): "\n".join(_cells(nb)) for nb in NOTEBOOKS}
    pages = {k: " ".join(v.split()) for k, v in pages.items()}  # a phrase may wrap across lines
    for where in ("README.md", "book/setup.md", "book/gpu.md", "CONTRIBUTING.md"):
        assert SAY in pages[where], f"{where} must say how to switch: {SAY} …"
    stale = re.compile(r"changing `MODEL`|set `MODEL`|by changing one line|changing one line", re.I)
    assert not {k: stale.findall(v) for k, v in pages.items() if stale.search(v)}


def test_readme_and_setup_say_the_address_is_a_placeholder():
    for page in (ROOT / "README.md", ROOT / "book" / "setup.md"):
        text = " ".join(page.read_text().split())
        assert "placeholder" in text and "tools/repo_url.py --set" in text, page.name


def _run_install_cell(monkeypatch, returncodes: list[int]):
    """Run chapter 1's install cell as on Colab, with pip answering ``returncodes`` in turn."""
    import tdcourse.env

    cell = _cells(NOTEBOOKS[0])[1]
    assert "%" not in cell, "the install cell is plain Python (a %pip failure would not stop it)"
    calls, drive = [], []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return types.SimpleNamespace(returncode=returncodes[len(calls) - 1], stdout="out", stderr="ERROR: no")

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(tdcourse.env, "use_drive", lambda: drive.append(True))
    exec(compile(cell, "install-cell", "exec"), {})
    return calls, drive


def test_the_install_cell_stops_with_one_message_when_pip_fails(monkeypatch, capsys):
    with pytest.raises(SystemExit) as err:
        _run_install_cell(monkeypatch, [0, 1])
    msg = str(err.value)
    assert msg.startswith("Installing tdcourse[quant] @ git+https://github.com/") and "failed" in msg
    assert "Check URL and REF in this cell" in msg
    assert "ERROR: no" in capsys.readouterr().out  # pip's own message is shown above it


def test_the_install_cell_installs_the_pinned_release_then_mounts_drive(monkeypatch):
    sys.path.insert(0, str(ROOT / "tools"))
    import repo_url

    calls, drive = _run_install_cell(monkeypatch, [0, 0])
    url, _, _ = repo_url.repository()
    assert calls[0][-2:] == ["--no-deps", repo_url.SMOLLM2]
    assert calls[1][-1] == f"tdcourse[quant] @ git+{url}@{repo_url.release()}"
    assert drive == [True]


# A Jupyter kernel as tqdm.autonotebook recognises one: tqdm >= 4.67 looks for the module
# ipykernel.zmqshell, older releases (4.66, the lowest our bounds allow) for IPKernelApp in the
# shell's config.
_KERNEL = ("import sys, types, IPython\n"
           "sys.modules['ipykernel.zmqshell'] = types.ModuleType('ipykernel.zmqshell')\n"
           "class ZMQInteractiveShell:\n"
           "    config = {'IPKernelApp': {}}\n"
           "IPython.get_ipython = lambda: ZMQInteractiveShell()\n")


@pytest.mark.parametrize("first, warns", [("import tdcourse", False), ("", True)])
def test_no_ipywidgets_warning_in_jupyter(first, warns):
    """Without ipywidgets, tqdm.auto warns "IProgress not found" in a kernel (red in JupyterLab);
    importing tdcourse first silences that one warning (and the check can fail: without it, it warns)."""
    pytest.importorskip("IPython")
    try:
        import ipywidgets  # noqa: F401
        pytest.skip("ipywidgets is installed: tqdm draws widgets and never warns")
    except ImportError:
        pass
    code = _KERNEL + f"{first}\nimport tqdm.auto\nimport warnings\nprint(len(warnings.filters))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert ("IProgress not found" in out.stderr) == warns, out.stderr


def test_the_quant_extra_brings_accelerate():
    """`pip install tdcourse[quant]` (the Colab cell) must be able to load a 4-bit model: transformers
    needs accelerate for that, and raises its own raw error without it."""
    text = (ROOT / "pyproject.toml").read_text()
    quant = re.search(r"^quant\s*=\s*\[([^\]]*)\]", text, flags=re.M)
    assert quant and "accelerate" in quant.group(1) and "bitsandbytes" in quant.group(1)
