"""One-command setup and run, for a fresh machine with nothing but Python 3.

    python3 tools/dev.py demo   # the main job: tconv against the peers on the benchmark layers
    python3 tools/dev.py test   # the whole test suite
    python3 tools/dev.py gpu    # on a lent GPU machine: tools/gpu_job.py (--rehearse: here)

Each creates ``.venv`` in the repository (once; reinstalled when pyproject.toml changes), installs
tconv editable with what that job needs, then runs it. Extra arguments go to the job (pytest's,
for ``test``). torch is pinned to the CPU build 2.13.0: a bare ``torch`` pulls a multi-GB CUDA
build. ``gpu`` makes no ``.venv`` on the GPU machine (no registry there: it runs on that
machine's python3 and installs offline, see tools/gpu_job.py); ``gpu --rehearse`` runs in the
test job's ``.venv``.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
TORCH = "torch==2.13.0"
JOBS = {
    "demo": {"extras": "bench,jax", "run": ["-m", "tconv", "bench"]},
    "test": {"extras": "test,bench,jax,triton,dask,onnx", "run": ["-m", "pytest"]},
    "gpu": {"extras": "test,bench,jax,triton,dask,onnx", "run": ["tools/gpu_job.py"]},
}


def _python() -> Path:
    return VENV / "bin" / "python"


def _ensure_env(extras: str) -> None:
    recipe = (ROOT / "pyproject.toml").read_bytes() + f"{extras}|{TORCH}".encode()
    stamp = VENV / f"tconv-{hashlib.sha256(recipe).hexdigest()[:16]}.stamp"
    if stamp.exists():
        return
    if not _python().exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    print(f"installing tconv[{extras}] and {TORCH} into {VENV}", flush=True)
    subprocess.run([str(_python()), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                   check=True)
    subprocess.run([str(_python()), "-m", "pip", "install", "--quiet", "-e",
                    f"{ROOT}[{extras}]", TORCH], check=True)
    stamp.touch()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in JOBS:
        print(__doc__, file=sys.stderr)
        return 2
    job = JOBS[argv[0]]
    python = sys.executable
    if argv[0] != "gpu" or "--rehearse" in argv:
        _ensure_env(job["extras"])
        python = str(_python())
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([python, *job["run"], *argv[1:]], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
