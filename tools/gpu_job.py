"""The GPU verification job, for a lent GPU machine with no package registry.

    python3 tools/dev.py gpu [--stage all|tests|bench] [--out DIR] [--precisions P ...]  # GPU machine
    python3 tools/dev.py gpu --rehearse [--out DIR]                   # here, no GPU

Steps, each logged: (1) install tconv with ``--no-deps`` and the wheels of ``wheelhouse/``
(array-api-compat, array-api-extra: the one command that fills it is ``PIP_DOWNLOAD`` below)
into a temporary folder put first on ``PYTHONPATH``, offline, beside the machine's own torch,
triton, CuPy, JAX and pytest; (2) write ``machine.txt`` (nvidia-smi, Python, torch, CUDA, cuDNN,
triton versions); (3) ``--stage tests``: the GPU tests (``tests/test_triton.py``,
``tests/test_frameworks_gpu.py``) and the golden suite on the Triton backend, summaries in
``tests.txt``; (4) ``--stage bench``: ``tools/gpu_bench.py`` (``report.md``, ``report.json``,
``report.png``). ``--stage all`` does both. Everything lands in ``--out`` (default
``bench-out/gpu``); the exit status is non-zero when a step failed.

``--rehearse`` runs the same steps here, on the CPU, with ``TRITON_INTERPRET=1``: a sample of
the tests, one tiny layer, wall-clock times. Without a wheelhouse it says so and takes the
dependencies from the running environment.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / "wheelhouse"
PIP_DOWNLOAD = ("python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 "
                "-d wheelhouse array-api-compat array-api-extra")
# pytest runs: (name, arguments on a GPU, arguments in the rehearsal)
TEST_RUNS = [
    ("gpu tests", ["tests/test_triton.py", "tests/test_frameworks_gpu.py"],
     ["tests/test_triton.py", "tests/test_frameworks_gpu.py", "-k",
      "forward_matches_reference and s1-valid-float32 or dlpack"]),
    ("golden suite, triton backend", ["tests/test_golden.py", "-k", "triton"],
     ["tests/test_golden.py", "-k", "forward_triton and op000"]),
]


def _log(message: str) -> None:
    print(f"[gpu job {time.strftime('%H:%M:%S')}] {message}", flush=True)


def install(site: Path, rehearse: bool) -> None:
    """tconv (no dependencies) and the wheelhouse, offline, into ``site``."""
    wheels = sorted(WHEELHOUSE.glob("*.whl"))
    if not wheels:
        if not rehearse:
            raise SystemExit(f"{WHEELHOUSE} has no wheels: fill it here with\n  {PIP_DOWNLOAD}\n"
                             "and carry it (CONTRIBUTING.md, 'GPU verification')")
        _log("wheelhouse/ is empty: rehearsal takes array-api-compat/-extra from this environment")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--no-build-isolation", "--no-cache-dir", "--disable-pip-version-check",
                    "--target", str(site), str(ROOT), *map(str, wheels)], check=True)
    _log(f"installed tconv{' and ' + ', '.join(w.name for w in wheels) if wheels else ''} "
         f"into {site}")


def _versions(env: dict) -> str:
    script = ("import sys, torch, triton, tconv\n"
              "print('python', sys.version.split()[0])\n"
              "print('torch', torch.__version__, 'cuda', torch.version.cuda,"
              " 'cudnn', torch.backends.cudnn.version())\n"
              "print('triton', triton.__version__)\n"
              "print('tconv from', tconv.__file__)\n"
              "if torch.cuda.is_available():\n"
              "    p = torch.cuda.get_device_properties(0)\n"
              "    print('device', p.name, p.multi_processor_count, 'SMs',"
              " round(p.total_memory / 2**30), 'GiB')\n")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, cwd=ROOT)
    return result.stdout + result.stderr


def machine_report(env: dict) -> str:
    smi = shutil.which("nvidia-smi")
    lines = [f"host: {platform.node()} {platform.machine()}, {os.cpu_count()} cores",
             f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}", "",
             _versions(env)]
    if smi:
        lines.append(subprocess.run([smi], capture_output=True, text=True).stdout)
    else:
        lines.append("nvidia-smi: not found")
    return "\n".join(lines)


def _has_xdist(env: dict) -> bool:
    return subprocess.run([sys.executable, "-c", "import xdist"], env=env,
                          capture_output=True).returncode == 0


def run_tests(env: dict, rehearse: bool) -> tuple[bool, str]:
    """The pytest runs; returns (all passed, their summaries)."""
    parallel = [] if rehearse or not _has_xdist(env) else ["-n", "8"]
    ok, summary = True, []
    for name, gpu_args, rehearsal_args in TEST_RUNS:
        args = rehearsal_args if rehearse else gpu_args
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                   "no:benchmark", "-rfEs", *parallel, *args]
        _log(f"{name}: {' '.join(command[1:])}")
        start = time.perf_counter()
        result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        output = result.stdout + result.stderr
        print(output[-3000:], flush=True)
        ok &= result.returncode == 0
        summary.append(f"## {name} (exit {result.returncode}, {time.perf_counter() - start:.0f} s)"
                       f"\n$ {' '.join(command[1:])}\n\n{output[-20000:]}\n")
    return ok, "\n".join(summary)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("all", "tests", "bench"), default="all")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "gpu")
    parser.add_argument("--rehearse", action="store_true",
                        help="here, without a GPU: TRITON_INTERPRET=1, test sample, tiny layer")
    parser.add_argument("--precisions", nargs="+", metavar="PRECISION",
                        help="the benchmark's precisions (default: all; see gpu_cases.py)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tconv-gpu-job-"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(work / "site"), *filter(None, [os.environ.get("PYTHONPATH")])]),
        TRITON_CACHE_DIR=str(work / "triton-cache"), PYTHONDONTWRITEBYTECODE="1",
        TRITON_DEFAULT_FP_FUSION=os.environ.get("TRITON_DEFAULT_FP_FUSION", "1"),
        # JAX takes 75% of the GPU's memory at its first GPU array: with pytest-xdist's workers
        # the second worker to touch JAX (and every torch allocation after) runs out of memory
        XLA_PYTHON_CLIENT_PREALLOCATE="false")
    if args.rehearse:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    try:
        install(work / "site", args.rehearse)
        (args.out / "machine.txt").write_text(machine_report(env))
        _log(f"wrote {args.out / 'machine.txt'}")
        ok = True
        if args.stage in ("all", "tests"):
            passed, summary = run_tests(env, args.rehearse)
            (args.out / "tests.txt").write_text(summary)
            ok &= passed
        if args.stage in ("all", "bench"):
            command = [sys.executable, str(ROOT / "tools" / "gpu_bench.py"), "--out",
                       str(args.out), *(["--rehearse", "--workers", "2"] if args.rehearse
                                        else []),
                       *(["--precisions", *args.precisions] if args.precisions else [])]
            _log(f"benchmark: {' '.join(command[1:])}")
            ok &= subprocess.run(command, env=env, cwd=ROOT).returncode == 0
        written = ", ".join(sorted(p.name for p in args.out.iterdir()))
        _log(f"{'done' if ok else 'FAILED'}: {written} in {args.out}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
