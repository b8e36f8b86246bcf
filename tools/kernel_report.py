"""Static report of the Triton kernels: every config compiled for sm_80 and sm_90a, no GPU needed.

    python tools/kernel_report.py               # compile all, write benchmarks/results/kernels/
    python tools/kernel_report.py --jobs 2      # in 2 processes
    python tools/kernel_report.py --render      # rewrite the table from the JSON (no compiling)

Each GEMM kernel (forward, dgrad, wgrad) is compiled with every config of its dtype's path
(``DOT_CONFIGS`` for float16, bfloat16 and float32 with TF32 or IEEE products, ``FMA_CONFIGS``
for float64), the d-bias partial-sum and the partial-sum kernels once per dtype, each for sm_80
and sm_90a, with triton's bundled ptxas (``TRITON_DUMP_PTXAS_LOG``). Recorded per compile:
registers per thread, spill stores and loads (bytes), shared memory (bytes, triton's
allocation), whether the kernel issues tensor-core instructions (``wgmma`` on sm_90a, ``mma`` on
sm_80; ``none`` for the FMA paths), and whether ``prune_gemm_configs`` keeps the config for a
large GEMM of that dtype and precision. The compiles use 32-bit offsets (``INDEX_64=False``),
operand pointers and channel strides aligned to 16 as triton specializes real launches on
NHWC tensors with channels a multiple of 16, unit channel strides, a 4x4 kernel at stride 2. The
GEMM kernels and the d-bias partials are compiled twice: as a 2-D launch (depth not walked, depth
sizes 1, which triton specializes as constants) and as a 3-D one, named ``forward3d``,
``dgrad3d``, ``wgrad3d``, ``bias_partial3d`` (a 4x4x4 kernel at stride 2, depth walked), whose
unfit configs are listed apart.

Output (never edit by hand; rerun this script): ``benchmarks/results/kernels/report.json``,
``benchmarks/results/kernels/table.md``, and ``kernels/unfit_configs.json``, the configs that
spill or exceed shared memory, per kernel, precision and arch, which ``prune_gemm_configs``
never keeps there. ``tests/test_kernel_report.py`` checks the pruning against the table and recompiles
a sample.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "kernels"

# precision name (as tconv._roofline names them) -> (triton pointer dtype, tl.dot input_precision)
PRECISIONS = {
    "float32-ieee": ("fp32", "ieee"),
    "float32-tf32": ("fp32", "tf32"),
    "float16": ("fp16", None),
    "bfloat16": ("bf16", None),
    "float64": ("fp64", None),
}
# target -> (compute capability, shared memory one block may use, bytes: A100 163 KiB, H100 227)
ARCHS = {"sm_90a": (90, 227 * 1024), "sm_80": (80, 163 * 1024)}
# each GEMM kernel twice: a 2-D launch (depth not walked) and a 3-D one (``3d``)
GEMM_KERNELS = ("forward", "dgrad", "wgrad", "forward3d", "dgrad3d", "wgrad3d")
REDUCTION_KERNELS = ("bias_partial", "sum_partials", "bias_partial3d")
# A GEMM large enough that every tile fits it: pruning then keeps by dtype, precision and shared
# memory alone.
LARGE_GEMM = dict(GEMM_M=1 << 20, GEMM_N=1024, GEMM_K=1024)


def _setup() -> None:
    """Compile for real (no interpreter), and have triton print ptxas' resource report."""
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
    # ptxas reports only what it compiles: a kernel found in triton's cache would report nothing
    os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="tconv-kernel-report-"))
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def compile_kernel(kernel, pointers: dict, constexprs: dict, arch: str, num_warps: int,
                   num_stages: int):
    """triton.compile of ``kernel`` (jit or autotuned) for ``arch``, as a launch on aligned NHWC
    tensors would specialize it; returns (compiled kernel, ptxas log)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = kernel.fn if hasattr(kernel, "configs") else kernel
    constexprs = {**{name: 1 for name in fn.arg_names if name.endswith("_stride_c")}, **constexprs}
    signature = {name: "constexpr" if name in constexprs else pointers.get(name, "i32")
                 for name in fn.arg_names}
    aligned = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
               if signature[name].startswith("*") or (signature[name] == "i32" and (
                   "_stride_" in name or name in ("in_channels", "GEMM_N", "GEMM_K")))}
    source = ASTSource(fn, signature, constexprs, aligned)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        compiled = triton.compile(source, target=GPUTarget("cuda", ARCHS[arch][0], 32),
                                  options=dict(num_warps=num_warps, num_stages=num_stages))
    return compiled, log.getvalue()


def _geometry(kernel_name: str) -> dict:
    """The geometry constexprs of a launch: a 4x4 (x4 for the ``3d`` kernels) kernel at stride
    2. A 2-D launch has a unit depth axis: no depth walked, and its depth sizes are 1, which
    triton specializes as constants."""
    if kernel_name.endswith("3d"):
        return dict(KD=4, STRIDE_D=2, DIL_D=1, TAP_STEP_D=2, DEPTH=True)
    return dict(KD=1, STRIDE_D=1, DIL_D=1, TAP_STEP_D=1, DEPTH=False, in_d=1, out_d=1,
                depths_per_phase=1)


def _base_kernel(kernel_name: str) -> str:
    """The kernel a report row compiles: ``forward3d`` is ``forward`` walking depth."""
    return kernel_name.removesuffix("3d")


def _gemm_constexprs(kernel_name: str, precision: str, config) -> dict:
    import triton.language as tl

    constexprs = dict(KH=4, KW=4, STRIDE_H=2, STRIDE_W=2, DIL_H=1, DIL_W=1, INDEX_64=False,
                      ACC=tl.float64 if precision == "float64" else tl.float32,
                      INPUT_PRECISION=PRECISIONS[precision][1], **config.kwargs,
                      **_geometry(kernel_name))
    if _base_kernel(kernel_name) == "forward":
        constexprs.update(TAP_STEP_H=2, TAP_STEP_W=2, GROUPS=1)
    else:
        constexprs.pop("TAP_STEP_D")
        constexprs.pop("depths_per_phase", None)
    if _base_kernel(kernel_name) == "wgrad":
        constexprs.update(GROUPS=1)
    return constexprs


def _pointers(kernel_name: str, precision: str) -> dict:
    element = "*" + PRECISIONS[precision][0]
    partial = "*fp64" if precision == "float64" else "*fp32"
    return {
        "forward": dict(x_ptr=element, w_ptr=element, bias_ptr=element, y_ptr=element),
        "dgrad": dict(dy_ptr=element, w_ptr=element, dx_ptr=element),
        "wgrad": dict(dy_ptr=element, x_ptr=element, partial_ptr=partial),
        "bias_partial": dict(dy_ptr=element, partial_ptr=partial),
        "sum_partials": dict(partial_ptr=partial, out_ptr=element),
    }[_base_kernel(kernel_name)]


def _kernel(kernel_name: str):
    from tconv.kernels import _backward, _forward

    return {"forward": _forward._forward_kernel, "dgrad": _backward._dgrad_kernel,
            "wgrad": _backward._wgrad_kernel, "bias_partial": _backward._bias_partial_kernel,
            "sum_partials": _backward._sum_partials_kernel}[_base_kernel(kernel_name)]


def _reduction_launch(kernel_name: str, precision: str) -> tuple[dict, int]:
    """The constexprs and warps the launchers give the reduction kernels."""
    import triton.language as tl

    from tconv.kernels import _backward

    acc = tl.float64 if precision == "float64" else tl.float32
    if _base_kernel(kernel_name) == "bias_partial":
        depth = (dict(DEPTH=True) if kernel_name.endswith("3d")
                 else dict(DEPTH=False, out_d=1))
        return dict(ACC=acc, INDEX_64=False, BLOCK_ROWS=_backward._BIAS_BLOCK_ROWS,
                    BLOCK_F=128, **depth), 4
    return dict(ACC=acc, BLOCK=_backward._SUM_BLOCK), 4


def config_name(config) -> str:
    from tconv.kernels import _autotune

    return _autotune.config_name(config)


def path_configs(precision: str) -> list:
    from tconv.kernels import _autotune

    return _autotune.FMA_CONFIGS if precision == "float64" else _autotune.DOT_CONFIGS


def kept_by_pruning(kernel_name: str, precision: str, arch: str) -> set[str]:
    """Names of the configs ``prune_gemm_configs`` keeps for a large GEMM of ``kernel_name`` at
    ``precision`` on ``arch``."""
    import torch
    import triton.language as tl

    from tconv.kernels import _autotune

    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32-tf32": torch.float32,
             "float32-ieee": torch.float32, "float64": torch.float64}[precision]
    arguments = dict(x_ptr=torch.empty(0, dtype=dtype), **LARGE_GEMM,
                     ACC=tl.float64 if precision == "float64" else tl.float32,
                     INPUT_PRECISION=PRECISIONS[precision][1],
                     DEPTH=_geometry(kernel_name)["DEPTH"])
    kept = _autotune.prune_gemm_configs(_autotune.DOT_CONFIGS + _autotune.FMA_CONFIGS, arguments,
                                        kernel=_base_kernel(kernel_name),
                                        unfit=_autotune.load_unfit_configs(), arch=arch)
    return {config_name(c) for c in kept}


def jobs() -> list[tuple]:
    """Every (kernel, precision, arch, config name) the report compiles."""
    todo = []
    for arch in ARCHS:
        for precision in PRECISIONS:
            for kernel_name in GEMM_KERNELS:
                todo += [(kernel_name, precision, arch, config_name(c))
                         for c in path_configs(precision)]
            if precision != "float32-tf32":  # no tl.dot: one float32 row is enough
                todo += [(kernel_name, precision, arch, "-") for kernel_name in REDUCTION_KERNELS]
    return todo


_PTXAS = {
    "registers": re.compile(r"Used (\d+) registers"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
}


def measure(job: tuple) -> dict:
    """Compile one job and read its resources."""
    _setup()
    kernel_name, precision, arch, name = job
    if kernel_name in GEMM_KERNELS:
        config = next(c for c in path_configs(precision) if config_name(c) == name)
        constexprs, warps, stages = (_gemm_constexprs(kernel_name, precision, config),
                                     config.num_warps, config.num_stages)
    else:
        (constexprs, warps), stages = _reduction_launch(kernel_name, precision), 3
    start = time.perf_counter()
    compiled, log = compile_kernel(_kernel(kernel_name), _pointers(kernel_name, precision),
                                   constexprs, arch, warps, stages)
    seconds = time.perf_counter() - start
    readings = {key: [int(v) for v in pattern.findall(log)] for key, pattern in _PTXAS.items()}
    if not readings["registers"]:
        raise RuntimeError(f"no ptxas report for {job} (triton without TRITON_DUMP_PTXAS_LOG?)"
                           f":\n{log}")
    ptx = compiled.asm["ptx"]
    tensor_cores = ("wgmma" if "wgmma.mma_async" in ptx
                    else "mma" if re.search(r"\bmma\.sync", ptx) else "none")
    return dict(kernel=kernel_name, precision=precision, arch=arch, config=name,
                registers=max(readings["registers"]),
                spill_stores=sum(readings["spill_stores"]),
                spill_loads=sum(readings["spill_loads"]),
                shared=compiled.metadata.shared, tensor_cores=tensor_cores,
                cp_async="cp.async" in ptx,
                compile_s=round(seconds, 1))


def _key(row: dict) -> tuple:
    return row["kernel"], row["precision"], row["arch"], row["config"]


def _fits(row: dict) -> bool:
    return (row["spill_stores"] == 0 and row["spill_loads"] == 0
            and row["shared"] <= ARCHS[row["arch"]][1])


def write_unfit_configs(report: dict) -> None:
    """``kernels/unfit_configs.json``: the GEMM configs that do not fit, per kernel, precision
    and arch, which the pruning then never keeps there."""
    from tconv.kernels import _autotune

    unfit = {}
    for row in report["rows"]:
        if row["kernel"] in GEMM_KERNELS and not _fits(row):
            key = f"{row['kernel']} {row['precision']} {row['arch']}"
            unfit.setdefault(key, []).append(row["config"])
    _autotune.UNFIT_FILE.write_text(json.dumps({
        "about": "configs that spill registers or exceed shared memory, per 'kernel precision "
                 "arch': written by tools/kernel_report.py from its compiles, never by hand; "
                 "prune_gemm_configs never keeps them on that arch",
        "triton": report["triton"],
        "configs": {key: sorted(names) for key, names in sorted(unfit.items())},
    }, indent=1) + "\n")


def annotate(rows: list[dict]) -> list[dict]:
    """Add ``kept`` (pruning keeps it) and ``fits`` (no spill, shared memory within the arch)."""
    kept = {(kernel, precision, arch): kept_by_pruning(kernel, precision, arch)
            for kernel in GEMM_KERNELS for precision in PRECISIONS for arch in ARCHS}
    for row in rows:
        row["kept"] = row["config"] == "-" or row["config"] in kept[row["kernel"],
                                                                     row["precision"], row["arch"]]
        row["fits"] = _fits(row)
    return rows


def render(report: dict) -> str:
    rows = report["rows"]
    bad_kept = [r for r in rows if r["kept"] and not r["fits"]]
    lines = [
        "# Static kernel report",
        "",
        f"Generated by `python tools/kernel_report.py` (never edit by hand) with triton "
        f"{report['triton']}, {len(rows)} compiles in {report['wall_s']:.0f} s wall "
        f"({report['compile_s']:.0f} s of compiling) on {report['machine']}.",
        "",
        "regs: registers per thread; spill: bytes of spill stores / loads; smem: shared memory "
        "(bytes); tc: tensor-core instructions (wgmma, mma, none); kept: `prune_gemm_configs` "
        "keeps it for a large GEMM at that precision on that arch; fits: no spill and smem "
        "within the arch "
        f"({', '.join(f'{a} {limit // 1024} KiB' for a, (_, limit) in ARCHS.items())}).",
        "",
        f"Kept configs that spill or exceed shared memory: {len(bad_kept)}. "
        f"Configs that do, all dropped by pruning: "
        f"{sum(1 for r in rows if not r['fits'])}.",
        "",
        "| kernel | precision | arch | config | regs | spill | smem | tc | kept | fits |",
        "|---|---|---|---|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['precision']} | {r['arch']} | {r['config']} | "
                     f"{r['registers']} | {r['spill_stores']}/{r['spill_loads']} | {r['shared']} | "
                     f"{r['tensor_cores']} | {'yes' if r['kept'] else 'no'} | "
                     f"{'yes' if r['fits'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1, help="compiling processes")
    parser.add_argument("--render", action="store_true",
                        help="re-annotate and rewrite the table from the JSON, compiling nothing")
    parser.add_argument("--missing", action="store_true",
                        help="compile only what the JSON lacks (after a change of the config "
                             "lists), drop its rows no longer compiled, keep the rest")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    _setup()
    import platform

    import triton

    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "report.json"
    old = json.loads(previous.read_text()) if args.render or args.missing else None
    if args.missing and old["triton"] != triton.__version__:
        raise SystemExit(f"the JSON is of triton {old['triton']}: compile everything")
    if args.render:
        report = old
    else:
        start = time.perf_counter()
        wanted = jobs()
        kept_rows = [r for r in old["rows"] if _key(r) in wanted] if args.missing else []
        todo = [job for job in wanted if job not in {_key(r) for r in kept_rows}]
        rows = []
        with ProcessPoolExecutor(args.jobs) as pool:
            for i, row in enumerate(pool.map(measure, todo), 1):
                rows.append(row)
                print(f"[{i}/{len(todo)}] {row['kernel']} {row['precision']} {row['arch']} "
                      f"{row['config']}: {row['registers']} regs, spill {row['spill_stores']}, "
                      f"smem {row['shared']}, {row['tensor_cores']} ({row['compile_s']} s)",
                      flush=True)
        rows = sorted(kept_rows + rows, key=lambda r: wanted.index(_key(r)))
        # --missing: the earlier run's wall time too (an approximation: its dropped rows included)
        wall_s = time.perf_counter() - start + (old["wall_s"] if args.missing else 0)
        report = dict(triton=triton.__version__, machine=f"{platform.machine()}, "
                      f"{os.cpu_count()} cores, {args.jobs} job(s)", wall_s=round(wall_s, 1),
                      compile_s=round(sum(r["compile_s"] for r in rows), 1), rows=rows)
    write_unfit_configs(report)
    report["rows"] = annotate(report["rows"])
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "table.md").write_text(render(report))
    bad = [r for r in report["rows"] if r["kept"] and not r["fits"]]
    for r in bad:
        print(f"KEPT BUT DOES NOT FIT: {r}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
