"""The GPU job's benchmark: tconv's Triton kernels against cuDNN on the tutorial layers, with the
roofline, written as one report (``report.md``, ``report.json``, ``report.png``).

    python tools/gpu_bench.py --out DIR              # on a CUDA GPU (tools/gpu_job.py runs it)
    python tools/gpu_bench.py --out DIR --rehearse   # TRITON_INTERPRET=1, tiny layers, CPU

Cases: ``benchmarks/gpu_cases.py`` (layers at training batch; forward, dgrad, wgrad; float16,
bfloat16, float32 with TF32 and with IEEE products). First every case's tconv pass runs once in
parallel worker processes, so that triton compiles every config autotuning will try into a shared
``TRITON_CACHE_DIR`` on all cores (the choices those concurrent runs made are deleted); then,
in this one process, each case is checked against torch (relative error) and timed alone:
``triton.testing.do_bench``'s median (CUDA events, L2 flushed between runs), autotuning and
cuDNN's algorithm search done before. The rehearsal times by the wall clock instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

# The rehearsal runs every code path once, as little as that takes (its CI test is ~a minute):
# the tiny layers, one case compiled by a worker process, one timed run. Its first layer (rank 2)
# takes every precision; the others (ranks 1 and 3) only the first precision, every pass: the
# precision changes only the dtypes handed to the same launchers, which tests/test_triton.py
# checks per dtype, and the interpreter is the rehearsal's whole cost.
REHEARSAL_WARM_CASES = 1


def _layers(rehearse: bool) -> dict:
    import gpu_cases

    return gpu_cases.TINY_LAYERS if rehearse else gpu_cases.LAYERS


def _cases(rehearse: bool, precisions: list[str]) -> list[tuple[str, str, str]]:
    import gpu_cases

    layers = list(_layers(rehearse))
    return [(layer, precision, pass_name) for layer in layers for precision in precisions
            for pass_name in gpu_cases.PASSES
            if not rehearse or layer == layers[0] or precision == precisions[0]]


def _device(rehearse: bool) -> str:
    return "cpu" if rehearse else "cuda"


def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _warm_one(case: tuple, rehearse: bool) -> str:
    """Run one case's tconv pass once: triton compiles (and autotunes) it."""
    import gpu_cases

    layer, precision, pass_name = case
    device = _device(rehearse)
    with gpu_cases.torch_settings(precision):
        tensors = gpu_cases.inputs(_layers(rehearse)[layer], precision, device)
        gpu_cases.tconv_pass(pass_name, *tensors)()
        _synchronize(device)
    return " ".join(case)


def warm_compile_cache(cases: list, rehearse: bool, workers: int) -> float:
    """Compile every config in parallel processes sharing TRITON_CACHE_DIR; returns seconds."""
    start = time.perf_counter()
    if rehearse:
        cases = cases[:REHEARSAL_WARM_CASES]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for done in pool.map(_warm_one, cases, [rehearse] * len(cases)):
            print(f"  compiled {done}", flush=True)
    cache = Path(os.environ.get("TRITON_CACHE_DIR", Path.home() / ".triton" / "cache"))
    for choice in cache.rglob("*.autotune.json"):  # tuned while sharing the GPU: tune again
        choice.unlink()
    return time.perf_counter() - start


def median_seconds(run, device: str, rehearse: bool) -> float:
    """The median time of ``run``, warmed up first (the rehearsal: one run, already warmed by
    the error check)."""
    if rehearse:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    import triton.testing

    run()
    _synchronize(device)
    return triton.testing.do_bench(run, warmup=25, rep=100, return_mode="median") / 1e3


def graph_seconds(run, device: str, rehearse: bool) -> tuple[float | None, str | None]:
    """The median time of ``run`` replayed from a CUDA graph, after a warm-up run on a side stream
    (as torch's graph capture asks): the GPU's own time, without the host's per-launch work,
    which the plain median includes where the host is slower than the GPU. ``(None, why)`` in
    the rehearsal or where capture fails."""
    if rehearse or device != "cuda":
        return None, "no CUDA graphs in the rehearsal"
    import torch
    import triton.testing

    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        return triton.testing.do_bench(graph.replay, warmup=25, rep=100,
                                       return_mode="median") / 1e3, None
    except Exception as error:  # noqa: BLE001 - reported in the row, the plain time stands
        return None, f"{type(error).__name__}: {error}"[:300]


def measure(cases: list, rehearse: bool):
    """Check and time each case; yields its row."""
    import gpu_cases

    from tconv._roofline import roofline

    device = _device(rehearse)
    for layer, precision, pass_name in cases:
        with gpu_cases.torch_settings(precision):
            case = gpu_cases.inputs(_layers(rehearse)[layer], precision, device)
            spec = case[0]
            error = gpu_cases.relative_error(pass_name, case)
            calls = {impl: gpu_cases.pass_callable(impl, pass_name, case)
                     for impl in gpu_cases.IMPLEMENTATIONS}
            seconds = {impl: median_seconds(call, device, rehearse)
                       for impl, call in calls.items()}
            config = gpu_cases.chosen_config(pass_name)
            graphs = {impl: graph_seconds(call, device, rehearse) for impl, call in calls.items()}
        limit = roofline(spec, precision, pass_name)
        row = dict(layer=layer, precision=precision, pass_name=pass_name, flops=limit.flops,
                   bytes=limit.bytes, roofline_s=limit.seconds, bound=limit.bound,
                   relative_error=error,
                   **{f"{impl}_s": s for impl, s in seconds.items()},
                   **{f"{impl}_tflops": limit.flops / s / 1e12 for impl, s in seconds.items()},
                   **{f"{impl}_roofline": limit.share(s) for impl, s in seconds.items()},
                   speedup_vs_cudnn=seconds["torch_cudnn"] / seconds["tconv_triton"],
                   tconv_config=config,
                   **{f"{impl}_graph_s": graph_s for impl, (graph_s, _) in graphs.items()},
                   graph_errors={impl: why for impl, (_, why) in graphs.items() if why})
        print(f"  {layer} {precision} {pass_name}: tconv {row['tconv_triton_s'] * 1e3:.3f} ms, "
              f"cuDNN {row['torch_cudnn_s'] * 1e3:.3f} ms, x{row['speedup_vs_cudnn']:.2f}, "
              f"{row['tconv_triton_roofline']:.0%} of roofline, error {error:.1e}, graph "
              f"{_ms(row['tconv_triton_graph_s'])} / {_ms(row['torch_cudnn_graph_s'])} ms, "
              f"{config}", flush=True)
        yield row


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def geomean(values) -> float | None:
    """None for no values (a report written before its cases are all measured)."""
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def render_markdown(report: dict) -> str:
    rows = report["rows"]
    lines = [
        "# GPU report: tconv Triton kernels vs cuDNN"
        + (" (REHEARSAL: interpreter, CPU)" if report["rehearsal"] else ""),
        "",
        f"{report['device']}; torch {report['torch']}, triton {report['triton']}, "
        f"cuDNN {report['cudnn']}; {report['date']}. Compile warm-up {report['warm_s']:.0f} s, "
        f"measurements {report['measure_s']:.0f} s.",
        "",
        "Times are medians (ms). TFLOP/s = the pass's FLOPs / time. x cuDNN = cuDNN's time / "
        "tconv's (above 1: tconv faster). roofline = the H100 SXM lower bound / time "
        "(`tconv._roofline`: 989 TFLOP/s fp16/bf16, 494 TF32, 67 fp32 IEEE, 3.35 TB/s). "
        "error = ||tconv - reference|| / ||reference|| of the pass's main result, the reference "
        "in float64 from the same inputs (`gpu_cases.reference`). graph ms = the median of the "
        "pass replayed from a CUDA graph: the GPU's own time, without the host's launch work "
        "(- where not taken). tconv config = the autotuner's tile for the pass's GEMM kernel.",
        "",
        "## Geometric mean of x cuDNN",
        "",
        "| precision | " + " | ".join(report["passes"]) + " |",
        "|---|" + "---:|" * len(report["passes"]),
    ]
    for precision in report["precisions"]:
        cells = [geomean(r["speedup_vs_cudnn"] for r in rows
                         if r["precision"] == precision and r["pass_name"] == p)
                 for p in report["passes"]]
        lines.append(f"| {precision} | "
                     + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    lines += [
        "",
        "## Every case",
        "",
        "| layer | precision | pass | tconv ms | cuDNN ms | tconv TFLOP/s | cuDNN TFLOP/s | "
        "x cuDNN | tconv roofline | cuDNN roofline | bound | error | tconv graph ms | "
        "cuDNN graph ms | tconv config |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['precision']} | {r['pass_name']} | "
            f"{r['tconv_triton_s'] * 1e3:.3f} | {r['torch_cudnn_s'] * 1e3:.3f} | "
            f"{r['tconv_triton_tflops']:.1f} | {r['torch_cudnn_tflops']:.1f} | "
            f"{r['speedup_vs_cudnn']:.2f} | {r['tconv_triton_roofline']:.0%} | "
            f"{r['torch_cudnn_roofline']:.0%} | {r['bound']} | {r['relative_error']:.1e} | "
            f"{_ms(r.get('tconv_triton_graph_s'))} | {_ms(r.get('torch_cudnn_graph_s'))} | "
            f"{r.get('tconv_config', '-')} |")
    return "\n".join(lines) + "\n"


def render_chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    passes, precisions = report["passes"], report["precisions"]
    layers = list(dict.fromkeys(r["layer"] for r in report["rows"]))
    figure, axes = plt.subplots(len(passes), 1, figsize=(12, 3.2 * len(passes)), sharex=True)
    width = 0.8 / len(precisions)
    for ax, pass_name in zip(axes, passes):
        for k, precision in enumerate(precisions):
            by_layer = {r["layer"]: r["speedup_vs_cudnn"] for r in report["rows"]
                        if r["pass_name"] == pass_name and r["precision"] == precision}
            ax.bar([i + k * width for i in range(len(layers))],
                   [by_layer.get(layer, 0) for layer in layers], width, label=precision)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_ylabel(f"{pass_name}\ncuDNN time / tconv time")
    axes[0].legend(ncol=len(precisions), fontsize="small")
    axes[0].set_title(f"tconv Triton vs cuDNN, {report['device']}"
                      + (" (rehearsal)" if report["rehearsal"] else ""))
    axes[-1].set_xticks([i + 0.4 - width / 2 for i in range(len(layers))], layers,
                        rotation=20, ha="right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rehearse", action="store_true")
    parser.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    parser.add_argument("--precisions", nargs="+", metavar="PRECISION",
                        help="a subset of gpu_cases.PRECISIONS (default: all), to fit a lease")
    args = parser.parse_args(argv)
    import torch
    import triton

    import gpu_cases

    precisions = args.precisions or list(gpu_cases.PRECISIONS)
    unknown = set(precisions) - set(gpu_cases.PRECISIONS)
    if unknown:
        parser.error(f"--precisions: {sorted(unknown)} not in {list(gpu_cases.PRECISIONS)}")
    cases = _cases(args.rehearse, precisions)
    print(f"benchmark: {len(cases)} cases; compiling in {args.workers} processes", flush=True)
    warm_s = warm_compile_cache(cases, args.rehearse, args.workers)
    start = time.perf_counter()
    report = dict(
        rehearsal=args.rehearse,
        device=("CPU, Triton interpreter" if args.rehearse
                else torch.cuda.get_device_name()),
        torch=torch.__version__, triton=triton.__version__,
        cudnn=torch.backends.cudnn.version(), date=time.strftime("%Y-%m-%d %H:%M UTC",
                                                                time.gmtime()),
        warm_s=warm_s, measure_s=0.0,
        passes=list(gpu_cases.PASSES), precisions=precisions,
        layers={name: layer._asdict() for name, layer in _layers(args.rehearse).items()},
        rows=[])
    args.out.mkdir(parents=True, exist_ok=True)
    for row in measure(cases, args.rehearse):  # the report so far, should the call be cut short
        report["rows"].append(row)
        report["measure_s"] = time.perf_counter() - start
        (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.out / "report.md").write_text(render_markdown(report))
    render_chart(report, args.out / "report.png")
    print(render_markdown(report).split("## Every case")[0], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
