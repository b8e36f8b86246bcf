"""The GPU job (tools/gpu_job.py) rehearsed end to end without a GPU: TRITON_INTERPRET=1, a sample
of the GPU tests, one tiny layer per rank through the benchmark, the whole report written. What is
left untested is the GPU itself (and the timings, which the rehearsal takes by the wall clock)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

# Looked up, not imported: importing triton here would fix its mode for the test modules after.
for _needed in ("torch", "triton", "matplotlib"):
    if importlib.util.find_spec(_needed) is None:
        pytest.skip(f"{_needed} is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent


def _gpu_job():
    spec = importlib.util.spec_from_file_location("gpu_job", ROOT / "tools" / "gpu_job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rehearsal_writes_the_whole_report(tmp_path):
    out = tmp_path / "gpu"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_job.py"), "--rehearse",
                             "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["machine.txt", "report.json", "report.md",
                                                     "report.png", "tests.txt"]
    machine = (out / "machine.txt").read_text()
    assert "triton" in machine and "torch" in machine and "nvidia-smi" in machine
    assert f"tconv from {tmp_path}" not in machine and "site" in machine  # the installed copy
    tests = (out / "tests.txt").read_text()
    assert tests.count("(exit 0,") == 2 and " passed" in tests
    report = json.loads((out / "report.json").read_text())
    cases = {(r["precision"], r["pass_name"]) for r in report["rows"]}
    assert cases == {(p, s) for p in ("float16", "bfloat16", "float32-tf32", "float32-ieee")
                     for s in ("forward", "dgrad", "wgrad")}
    # every rank through every pass (ranks 1 and 3 in one precision: tools/gpu_bench.py)
    ranks = {(len(report["layers"][r["layer"]]["spatial"]), r["pass_name"])
             for r in report["rows"]}
    assert ranks == {(rank, s) for rank in (1, 2, 3) for s in ("forward", "dgrad", "wgrad")}
    for row in report["rows"]:
        assert row["flops"] > 0 and row["bytes"] > 0 and row["roofline_s"] > 0
        assert row["tconv_triton_s"] > 0 and row["torch_cudnn_s"] > 0
        # the autotuner's tile; no CUDA graphs here, said so (on a GPU: the graph replay's time)
        assert row["tconv_config"] == "32x16x16 s1 w4"   # the interpreter's one config
        assert row["tconv_triton_graph_s"] is None and row["torch_cudnn_graph_s"] is None
        assert set(row["graph_errors"]) == {"tconv_triton", "torch_cudnn"}
        if row["precision"] != "bfloat16":  # the interpreter's bf16 tl.dot is wrong (GPU only)
            assert row["relative_error"] < 1e-2, row
    table = (out / "report.md").read_text()
    assert "REHEARSAL" in table and table.count("| tiny-") == len(report["rows"])
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_the_real_job_refuses_an_empty_wheelhouse_with_the_command(tmp_path, monkeypatch):
    gpu_job = _gpu_job()
    monkeypatch.setattr(gpu_job, "WHEELHOUSE", tmp_path / "wheelhouse")
    with pytest.raises(SystemExit, match="pip download --no-deps --only-binary=:all: "
                                         "--python-version 3.12"):
        gpu_job.install(tmp_path / "site", rehearse=False)


def test_the_benchmark_refuses_an_unknown_precision(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_bench.py"), "--rehearse",
                             "--out", str(tmp_path), "--precisions", "bfloat16", "float8"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "--precisions: ['float8'] not in" in result.stderr and not any(tmp_path.iterdir())
