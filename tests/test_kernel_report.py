"""The static kernel report (tools/kernel_report.py, committed under benchmarks/results/kernels/):
every config the pruning can keep compiles without spilling and within shared memory, and the
committed table is what the compiler says.

Compiling all of the table takes about an hour of this 2-core machine (see its header), too long
for CI. So CI (1) checks the pruning against the whole committed table, which costs no compile,
and (2) recompiles a sample of 11 kernels, the largest tile of each kernel and dtype path on
sm_90a plus one sm_80 compile and two kernels walking depth (3-D launches), about a minute, and compares them with their rows: registers,
spills and shared memory exactly when this triton is the table's, else (a newer triton in CI)
that no kept config spills or overflows and that the tensor-core instructions are the same. A
change to the kernels or the configs therefore needs the table regenerated, or (2) fails.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
if not torch.cuda.is_available():  # triton's mode is fixed at its first import: as test_triton.py
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton", reason="triton is not installed")

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "benchmarks" / "results" / "kernels" / "report.json"
# (kernel, precision, arch, config): the sample CI recompiles
SAMPLE = [
    ("forward", "float16", "sm_90a", "128x128x64 s3 w8"),
    ("forward", "float32-tf32", "sm_90a", "128x128x32 s4 w8"),
    ("dgrad", "bfloat16", "sm_90a", "128x128x64 s3 w8"),
    ("wgrad", "float16", "sm_90a", "128x128x64 s3 w8"),
    ("forward", "float32-ieee", "sm_90a", "64x64x64 s4 w4"),
    ("forward", "float64", "sm_90a", "64x64x4 s2 w8"),
    ("bias_partial", "float16", "sm_90a", "-"),
    ("sum_partials", "bfloat16", "sm_90a", "-"),
    ("dgrad", "float16", "sm_80", "128x128x64 s3 w8"),
    ("forward3d", "float16", "sm_90a", "128x128x64 s3 w8"),
    ("wgrad3d", "float32-tf32", "sm_80", "128x64x32 s4 w4"),
]


def _kernel_report():
    spec = importlib.util.spec_from_file_location("kernel_report",
                                                  ROOT / "tools" / "kernel_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table():
    return json.loads(TABLE.read_text())


def _key(row):
    return row["kernel"], row["precision"], row["arch"], row["config"]


def test_the_table_covers_every_kernel_config_precision_and_arch(table):
    assert sorted(_key(r) for r in table["rows"]) == sorted(_kernel_report().jobs())


def test_pruning_keeps_no_config_that_spills_or_overflows_shared_memory(table):
    """The pruning as it is now, at every precision, against the compiler's figures."""
    report = _kernel_report()
    rows = {_key(r): r for r in table["rows"]}
    for precision in report.PRECISIONS:
        for kernel in report.GEMM_KERNELS:
            for arch, (_, shared_limit) in report.ARCHS.items():
                kept = report.kept_by_pruning(kernel, precision, arch)
                assert kept, (kernel, precision, arch)
                for config in kept:
                    row = rows[kernel, precision, arch, config]
                    assert row["spill_stores"] == row["spill_loads"] == 0, row
                    assert row["shared"] <= shared_limit, row
    # and the table's own column says the same
    assert not [r for r in table["rows"] if r["kept"] and not r["fits"]]


def test_tensor_cores_are_used_by_every_tensor_core_precision(table):
    gemm_kernels = _kernel_report().GEMM_KERNELS
    for row in table["rows"]:
        if row["kernel"] in gemm_kernels and row["kept"]:
            if row["precision"] in ("float64", "float32-ieee"):
                assert row["tensor_cores"] == "none", row
            elif row["arch"] == "sm_80":
                assert row["tensor_cores"] == "mma", row


_MEASURE = """
import json, sys
sys.path.insert(0, {tools!r})
import kernel_report
print(json.dumps([kernel_report.measure(tuple(job)) for job in {sample!r}]))
"""


def test_a_sample_recompiles_to_the_tables_figures(table, tmp_path):
    """Compiled (not interpreted) with triton's bundled ptxas, no GPU needed: CI thereby also
    catches code the interpreter accepts but the compiler does not. The half-precision and TF32
    GEMMs issue wgmma on sm_90a and load their K loop through cp.async (pipelined)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a cached kernel would print no ptxas report
    script = _MEASURE.format(tools=str(ROOT / "tools"), sample=SAMPLE)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.splitlines()[-1])
    rows = {_key(r): r for r in table["rows"]}
    same_triton = table["triton"] == triton.__version__
    for now in measured:
        then = rows[_key(now)]
        assert then["kept"], then  # the sample is of configs the pruning keeps
        assert now["tensor_cores"] == then["tensor_cores"], (now, then)
        assert now["spill_stores"] == now["spill_loads"] == 0, now
        if same_triton:
            for field in ("registers", "spill_stores", "spill_loads", "shared"):
                assert now[field] == then[field], (field, now, then)
        if (now["kernel"] in _kernel_report().GEMM_KERNELS and now["arch"] == "sm_90a"
                and now["precision"] in ("float16", "bfloat16", "float32-tf32")):
            assert now["tensor_cores"] == "wgmma" and now["cp_async"], now
