"""``tconv bench``: tconv against the peers on the seed tutorials' layers, as a table, a JSON and a
PNG bar chart.

Every case runs tconv on NumPy and on torch CPU inputs and the peers in the same process, so the
ratios compare like with like on whatever load the machine carries: torch ``conv_transpose2d``
(NCHW, its native layout; Keras' padding is a crop of the full output) and TensorFlow
``conv2d_transpose`` when tensorflow is importable. With CUDA present, tconv's Triton backend and
torch on the GPU join as extra columns. Times are medians over rounds that run every column in
turn (a burst of load then slows them alike); the ratio is the faster peer's time over
tconv's (above 1: tconv is faster).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import tconv


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    size: int
    in_channels: int
    filters: int
    kernel_size: int
    strides: int
    padding: str

    @property
    def spec(self):
        return tconv.make_spec((self.batch, self.size, self.size, self.in_channels),
                               (self.kernel_size, self.kernel_size, self.filters,
                                self.in_channels),
                               strides=self.strides, padding=self.padding,
                               data_format="channels_last")


# The performance issue's set: float32, NHWC, the seed tutorials' layers.
CASES = (
    Case("dcgan_g2", 256, 7, 128, 64, 5, 2, "same"),
    Case("dcgan_g3", 256, 14, 64, 1, 5, 2, "same"),
    Case("cvae_d1", 32, 7, 32, 64, 3, 2, "same"),
    Case("pix2pix_u6", 1, 64, 256, 64, 4, 2, "same"),
    Case("pix2pix_out", 1, 128, 128, 3, 4, 2, "same"),
    Case("unet_up1", 4, 28, 1024, 512, 2, 2, "valid"),
    Case("seg_up4", 16, 64, 64, 32, 3, 2, "same"),
    Case("fcn_x8", 1, 32, 32, 21, 16, 8, "same"),
)
QUICK = ("dcgan_g3", "cvae_d1", "pix2pix_out", "fcn_x8")
PASSES = ("forward", "forward+backward")


def case_inputs(case: Case, seed: int = 0):
    """float32 NHWC input, Keras-layout kernel, bias and an upstream gradient, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    spec = case.spec
    return (rng.standard_normal(spec.input_shape, dtype=np.float32),
            rng.standard_normal(spec.kernel_shape, dtype=np.float32) / math.sqrt(
                case.kernel_size ** 2 * case.in_channels),
            rng.standard_normal((case.filters,), dtype=np.float32),
            rng.standard_normal(spec.output_shape, dtype=np.float32))


def _options(case: Case) -> dict:
    return dict(strides=case.strides, padding=case.padding, data_format="channels_last")


def tconv_numpy(case: Case, x, kernel, bias, dy):
    """pass name -> callable, tconv on NumPy arrays."""
    options = _options(case)

    def forward():
        return tconv.conv2d_transpose(x, kernel, bias, backend="cpu", **options)

    def backward():
        return tconv.conv2d_transpose_backward(dy, x, kernel, backend="cpu", **options)

    def forward_backward():
        forward()
        return backward()

    return {"forward": forward, "backward": backward, "forward+backward": forward_backward}


def _torch_autograd_passes(torch, run, inputs, dy):
    """pass name -> callable for ``run(*inputs)`` under torch autograd, backpropagating ``dy``."""
    leaves = [a.detach().clone().requires_grad_(True) for a in inputs]
    recorded = run(*leaves)

    def forward():
        with torch.no_grad():
            return run(*inputs)

    def backward():
        return torch.autograd.grad(recorded, leaves, dy, retain_graph=True)

    def forward_backward():
        return torch.autograd.grad(run(*leaves), leaves, dy)

    return {"forward": forward, "backward": backward, "forward+backward": forward_backward}


def tconv_torch(case: Case, x, kernel, bias, dy, device="cpu", backend="cpu"):
    """tconv on torch tensors (its custom op, autograd through tconv's backward)."""
    import torch

    options = _options(case)
    tensors = [torch.from_numpy(a).to(device) for a in (x, kernel, bias)]
    return _torch_autograd_passes(
        torch, lambda *a: tconv.conv2d_transpose(*a, backend=backend, **options), tensors,
        torch.from_numpy(dy).to(device))


def torch_conv_transpose(case: Case, x, kernel, bias, dy, device="cpu", dtype=None):
    """The torch peer: ``conv_transpose2d`` in NCHW; Keras' output is a crop of torch's full one."""
    import torch

    spec = case.spec
    dtype = dtype or torch.float32
    x_nchw = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(device, dtype)
    weight = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous().to(device, dtype)
    bias_t = torch.from_numpy(bias).to(device, dtype)
    dy_nchw = torch.from_numpy(dy).permute(0, 3, 1, 2).contiguous().to(device, dtype)

    def run(x_, weight_, bias_):
        full = torch.nn.functional.conv_transpose2d(x_, weight_, bias_, stride=spec.strides)
        return full[:, :, spec.pad_top:spec.pad_top + spec.out_height,
                    spec.pad_left:spec.pad_left + spec.out_width]

    return _torch_autograd_passes(torch, run, [x_nchw, weight, bias_t], dy_nchw)


def tensorflow_conv_transpose(case: Case, x, kernel, bias, dy):
    """The TensorFlow peer: ``tf.nn.conv2d_transpose`` (what Keras' layer calls), NHWC."""
    import tensorflow as tf

    spec = case.spec
    constants = [tf.constant(a) for a in (x, kernel, bias)]
    leaves = [tf.Variable(a) for a in constants]
    dy_tf = tf.constant(dy)
    padding = spec.padding.upper()

    def run(x_, kernel_, bias_):
        y = tf.nn.conv2d_transpose(x_, kernel_, spec.output_shape, spec.strides, padding=padding)
        return tf.nn.bias_add(y, bias_)

    with tf.GradientTape(persistent=True) as recorded_tape:
        recorded = run(*leaves)

    def forward():
        return run(*constants).numpy()

    def backward():
        return [g.numpy() for g in recorded_tape.gradient(recorded, leaves,
                                                          output_gradients=dy_tf)]

    def forward_backward():
        with tf.GradientTape() as tape:
            y = run(*leaves)
        return [g.numpy() for g in tape.gradient(y, leaves, output_gradients=dy_tf)]

    return {"forward": forward, "backward": backward, "forward+backward": forward_backward}


def median_ms(fn, *, min_repeats: int, budget_s: float, sync=None) -> float:
    """Median wall time of ``fn`` (see :func:`interleaved_median_ms`)."""
    return interleaved_median_ms({"fn": (fn, sync)}, {}, min_repeats=min_repeats,
                                 budget_s=budget_s)["fn"]


# After its last call a library's worker threads spin before they sleep (OpenBLAS about 0.1 s,
# OpenMP less), taking the cores from whatever runs next: each turn first runs its column
# untimed for this long, so a column is timed as it runs on its own.
SETTLE_S = 0.1
ROUNDS = 3


def interleaved_median_ms(calls: dict, errors: dict, *, min_repeats: int, budget_s: float,
                          settle_s: float = SETTLE_S) -> dict:
    """Median wall time per ``name -> (fn, sync)``, timed in ``ROUNDS`` rounds of turns.

    The machine's load comes in bursts: spreading each column over the whole run, turn by turn,
    lets a burst slow all of them alike instead of one column's block. Each column gets one
    warm-up call first (autotuning, allocator, caches); one that raises is reported in
    ``errors`` and dropped. A turn settles for ``settle_s``, then times at least
    ``min_repeats / ROUNDS`` calls and up to ``budget_s / ROUNDS`` seconds.
    """
    live = {}
    for name, (fn, sync) in calls.items():
        try:
            fn()
            live[name] = (fn, sync)
        except Exception as error:  # a column this machine cannot run: reported, not fatal
            errors[name] = f"{type(error).__name__}: {error}"
    times = {name: [] for name in live}
    per_turn = -(-min_repeats // ROUNDS)
    for _ in range(ROUNDS):
        for name, (fn, sync) in live.items():
            run_for(fn, sync, settle_s)
            started = time.perf_counter()
            timed = []
            while len(timed) < per_turn or (time.perf_counter() - started < budget_s / ROUNDS
                                            and len(timed) < 50 // ROUNDS):
                t0 = time.perf_counter()
                fn()
                if sync is not None:
                    sync()
                timed.append(time.perf_counter() - t0)
            times[name] += timed
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def run_for(fn, sync, seconds: float) -> None:
    """Call ``fn`` (at least once when ``seconds`` > 0) until ``seconds`` have passed."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        fn()
        if sync is not None:
            sync()


def _max_abs_error(case: Case, x, kernel, bias):
    """Max abs error of tconv float32 (NumPy) and of torch float32 against torch in float64."""
    import torch

    dy = np.zeros(case.spec.output_shape, np.float32)
    y = np.asarray(tconv_numpy(case, x, kernel, bias, dy)["forward"]())
    exact = torch_conv_transpose(case, x, kernel, bias, dy, dtype=torch.float64)["forward"]()
    peer = torch_conv_transpose(case, x, kernel, bias, dy)["forward"]()
    exact, peer = (a.permute(0, 2, 3, 1).numpy() for a in (exact, peer))
    return float(np.abs(y - exact).max()), float(np.abs(peer - exact).max())


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _cuda_available() -> bool:
    return _importable("torch") and __import__("torch").cuda.is_available()


def implementations(case: Case):
    """name -> (builder of {pass name: callable} from the case's inputs, is_peer, synchronize),
    for what this machine has."""
    found = {"tconv numpy": (tconv_numpy, False, None)}
    if _importable("torch"):
        found["tconv torch"] = (tconv_torch, False, None)
        found["torch"] = (torch_conv_transpose, True, None)
    if _importable("tensorflow"):
        found["tensorflow"] = (tensorflow_conv_transpose, True, None)
    if _cuda_available():
        import torch

        gpu = torch.cuda.synchronize
        found["tconv triton (GPU)"] = (
            functools.partial(tconv_torch, device="cuda", backend="triton"), False, gpu)
        found["torch (GPU)"] = (functools.partial(torch_conv_transpose, device="cuda"), True, gpu)
    return found


def run_case(case: Case, *, min_repeats: int, budget_s: float) -> dict:
    inputs = case_inputs(case)
    row = {"case": case.name, "flops_forward": case.spec.flops, "times_ms": {}, "errors": {},
           "peers": []}
    runnable = {}
    for name, (build, is_peer, sync) in implementations(case).items():
        if is_peer:
            row["peers"].append(name)
        try:
            runnable[name] = (build(case, *inputs), sync)
        except Exception as error:  # a column this machine cannot run: reported, not fatal
            row["errors"][name] = f"{type(error).__name__}: {error}"
    for pass_name in PASSES:
        calls = {name: (passes[pass_name], sync) for name, (passes, sync) in runnable.items()}
        for name, ms in interleaved_median_ms(calls, row["errors"], min_repeats=min_repeats,
                                              budget_s=budget_s).items():
            row["times_ms"].setdefault(pass_name, {})[name] = ms
    if _importable("torch"):
        row["max_abs_error_tconv"], row["max_abs_error_torch"] = _max_abs_error(case, *inputs[:3])
    return row


def ratio(row: dict, pass_name: str, name: str) -> float | None:
    """The faster CPU peer's time over ``name``'s (peers on the GPU compare with GPU columns)."""
    times = row["times_ms"].get(pass_name, {})
    on_gpu = "(GPU)" in name
    peers = [times[p] for p in row["peers"] if p in times and ("(GPU)" in p) == on_gpu]
    if name not in times or not peers:
        return None
    return min(peers) / times[name]


def sgemm_gflops(size: int = 2048) -> float:
    """This machine's float32 GEMM throughput (NumPy's BLAS), the ceiling for GEMM-bound cases."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    ms = median_ms(lambda: a @ a, min_repeats=5, budget_s=1.0)
    return 2 * size ** 3 / ms / 1e6


def geomean(values) -> float | None:
    values = [v for v in values if v is not None]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _pass_flops(row: dict, pass_name: str) -> int:
    # backward = dx (a forward-sized GEMM) + dkernel (another): three forwards in all
    return row["flops_forward"] * (1 if pass_name == "forward" else 3)


def format_table(rows: list[dict], sgemm: float) -> str:
    names = []
    for row in rows:
        for times in row["times_ms"].values():
            names += [n for n in times if n not in names]
    mine = [n for n in names if n.startswith("tconv")]
    header = (["case", "pass"] + [f"{n} ms" for n in names] + ["tconv numpy GFLOP/s", "% sgemm"]
              + [f"ratio {n.removeprefix('tconv ')}" for n in mine])
    lines = [header]
    for pass_name in PASSES:
        for row in rows:
            times = row["times_ms"].get(pass_name, {})
            gflops = _pass_flops(row, pass_name) / times["tconv numpy"] / 1e6
            lines.append([row["case"], pass_name]
                         + [f"{times[n]:.2f}" if n in times else "-" for n in names]
                         + [f"{gflops:.1f}", f"{100 * gflops / sgemm:.0f}%"]
                         + [_fmt_ratio(ratio(row, pass_name, n)) for n in mine])
        lines.append(["geomean", pass_name] + [""] * (len(names) + 2)
                     + [_fmt_ratio(geomean(ratio(r, pass_name, n) for r in rows)) for n in mine])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    errors = [f"  {row['case']}: tconv {row['max_abs_error_tconv']:.2e}, torch "
              f"{row['max_abs_error_torch']:.2e}" for row in rows if "max_abs_error_tconv" in row]
    if errors:
        text += ["", "max abs error of the float32 forward vs torch in float64:"] + errors
    for row in rows:
        text += [f"  {row['case']}: {name} skipped ({why})" for name, why in row["errors"].items()]
    text.append(f"\nsgemm (NumPy BLAS, 2048^3): {sgemm:.1f} GFLOP/s; ratio = faster peer's median "
                "time / tconv's (> 1: tconv faster)")
    return "\n".join(text)


def _fmt_ratio(value):
    return "-" if value is None else f"{value:.2f}x"


def write_chart(rows: list[dict], path: Path) -> None:
    """Grouped bars of GFLOP/s per case, one panel per pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(PASSES), 1, figsize=(11, 8), constrained_layout=True)
    for axis, pass_name in zip(axes, PASSES):
        names = []
        for row in rows:
            names += [n for n in row["times_ms"].get(pass_name, {}) if n not in names]
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            heights = [_pass_flops(r, pass_name) / r["times_ms"][pass_name][name] / 1e6
                       if name in r["times_ms"].get(pass_name, {}) else 0 for r in rows]
            axis.bar([c + i * width for c in range(len(rows))], heights, width, label=name)
        axis.set_xticks([c + width * (len(names) - 1) / 2 for c in range(len(rows))],
                        [r["case"] for r in rows])
        axis.set_ylabel("GFLOP/s")
        axis.set_title(f"{pass_name}, float32")
        axis.legend(fontsize="small")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def machine() -> dict:
    import os

    described = {"platform": platform.platform(), "processor": platform.processor(),
                 "cpus": os.cpu_count(), "python": platform.python_version(),
                 "numpy": np.__version__, "load_average": list(os.getloadavg())}
    if _importable("torch"):
        import torch

        described.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
        if torch.cuda.is_available():
            described["gpu"] = torch.cuda.get_device_name()
    if _importable("tensorflow"):
        described["tensorflow"] = __import__("tensorflow").__version__
    return described


def bench(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tconv bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", metavar="CASE",
                        help=f"cases to run (default: all): {', '.join(c.name for c in CASES)}")
    parser.add_argument("--quick", action="store_true",
                        help=f"the small cases only ({', '.join(QUICK)}), fewer repeats")
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="folder for bench.json and bench.png (default: ./bench-results)")
    args = parser.parse_args(argv)
    known = {c.name: c for c in CASES}
    unknown = [name for name in args.cases if name not in known]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    chosen = [known[n] for n in (args.cases or (QUICK if args.quick else known))]
    min_repeats, budget_s = (3, 0.2) if args.quick else (5, 1.0)

    from tqdm import tqdm

    rows = []
    progress = tqdm(chosen, unit="case", file=sys.stderr)
    for case in progress:
        progress.set_description(case.name)
        rows.append(run_case(case, min_repeats=min_repeats, budget_s=budget_s))
    sgemm = sgemm_gflops()
    print(format_table(rows, sgemm))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "sgemm_gflops": sgemm, "cases": rows,
              "geomean_ratio": {p: {n: geomean(ratio(r, p, n) for r in rows)
                                    for n in rows[0]["times_ms"][p] if n.startswith("tconv")}
                                for p in PASSES}}
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))
    write_chart(rows, args.out / "bench.png")
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] != "bench":
        print("usage: tconv bench [CASE ...] [--quick] [--out DIR]\n\n" + __doc__,
              file=sys.stderr)
        return 2
    return bench(argv[1:])
