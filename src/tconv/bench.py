"""The benchmark harness behind ``tconv bench``, ``benchmarks/test_bench_cpu.py`` and
``tools/bench_rss.py``: the cases (the seed tutorials' layers), the columns (tconv on NumPy and on
torch CPU inputs, the peers at their best) and the timing.

Every case runs every column in the same process, so the ratios compare like with like on
whatever load the machine carries. The peers: torch ``conv_transpose2d`` in NCHW (its default
layout) and in ``channels_last`` (what a user with NHWC data picks; oneDNN's layout, faster on
most of these layers), Keras' padding a crop of torch's full output; and TensorFlow
``conv2d_transpose`` in NHWC when tensorflow is importable. With CUDA present, tconv's Triton
backend and torch on the GPU join as extra columns. Times are medians over rounds that run every
column in turn (a burst of load then slows them alike); the ratio is the fastest peer's time over
tconv's (above 1: tconv is faster).
"""

from __future__ import annotations

import functools
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, replace

import numpy as np

import tconv

from ._roofline import roofline


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

    def scaled(self, *, batch: int, size: int) -> Case:
        return replace(self, name=f"{self.name} {batch}x{size}^2", batch=batch, size=size)


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


def torch_conv_transpose(case: Case, x, kernel, bias, dy, device="cpu", dtype=None,
                         channels_last=False):
    """The torch peer: ``conv_transpose2d``, NCHW or ``channels_last`` (the NHWC arrays as they
    are, viewed as NCHW); Keras' output is a crop of torch's full one."""
    import torch

    spec = case.spec
    dtype = dtype or torch.float32
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def as_torch(a_nhwc):
        return (torch.from_numpy(a_nhwc).permute(0, 3, 1, 2).to(device, dtype)
                .contiguous(memory_format=layout))

    weight = (torch.from_numpy(kernel).permute(3, 2, 0, 1).to(device, dtype)
              .contiguous(memory_format=layout))
    bias_t = torch.from_numpy(bias).to(device, dtype)

    def run(x_, weight_, bias_):
        full = torch.nn.functional.conv_transpose2d(x_, weight_, bias_, stride=spec.strides)
        return full[:, :, spec.pad_top:spec.pad_top + spec.out_height,
                    spec.pad_left:spec.pad_left + spec.out_width]

    return _torch_autograd_passes(torch, run, [as_torch(x), weight, bias_t], as_torch(dy))


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


# column name -> (builder of {pass name: callable} from a case and its inputs, is_peer, needs).
# Named here, not probed, so that a tool can take one column without importing the others.
CPU_COLUMNS = {
    "tconv numpy": (tconv_numpy, False, None),
    "tconv torch": (tconv_torch, False, "torch"),
    "torch NCHW": (torch_conv_transpose, True, "torch"),
    "torch channels_last": (functools.partial(torch_conv_transpose, channels_last=True), True,
                            "torch"),
    "tensorflow": (tensorflow_conv_transpose, True, "tensorflow"),
}


def importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def implementations():
    """name -> (builder, is_peer, synchronize) for the columns this machine has."""
    found = {name: (build, is_peer, None) for name, (build, is_peer, needs) in CPU_COLUMNS.items()
             if needs is None or importable(needs)}
    if importable("torch") and __import__("torch").cuda.is_available():
        import torch

        gpu = torch.cuda.synchronize
        found["tconv triton (GPU)"] = (
            functools.partial(tconv_torch, device="cuda", backend="triton"), False, gpu)
        found["torch (GPU)"] = (functools.partial(torch_conv_transpose, device="cuda"), True, gpu)
    return found


# After its last call a library's worker threads spin before they sleep (OpenBLAS about 0.1 s,
# OpenMP less), taking the cores from whatever runs next: each turn first runs its column
# untimed for this long, so a column is timed as it runs on its own.
SETTLE_S = 0.1
ROUNDS = 3


def median_ms(fn, *, min_repeats: int, budget_s: float, sync=None) -> float:
    """Median wall time of ``fn`` (see :func:`interleaved_median_ms`)."""
    return interleaved_median_ms({"fn": (fn, sync)}, {}, min_repeats=min_repeats,
                                 budget_s=budget_s)["fn"]


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


def run_case(case: Case, *, min_repeats: int, budget_s: float, passes=PASSES,
             columns=None) -> dict:
    """One row: every column's median time per pass (``columns``: the implementations' names to
    run, default all), and the float32 errors when torch is there."""
    inputs = case_inputs(case)
    row = {"case": case.name, "flops_forward": case.spec.flops, "times_ms": {}, "errors": {},
           "peers": [], "roofline_h100": h100_floor(case.spec)}
    runnable = {}
    for name, (build, is_peer, sync) in implementations().items():
        if columns is not None and name not in columns:
            continue
        if is_peer:
            row["peers"].append(name)
        try:
            runnable[name] = (build(case, *inputs), sync)
        except Exception as error:  # a column this machine cannot run: reported, not fatal
            row["errors"][name] = f"{type(error).__name__}: {error}"
    for pass_name in passes:
        calls = {name: (built[pass_name], sync) for name, (built, sync) in runnable.items()}
        for name, ms in interleaved_median_ms(calls, row["errors"], min_repeats=min_repeats,
                                              budget_s=budget_s).items():
            row["times_ms"].setdefault(pass_name, {})[name] = ms
    if columns is None and importable("torch"):
        row["max_abs_error_tconv"], row["max_abs_error_torch"] = _max_abs_error(case, *inputs[:3])
    return row


def h100_floor(spec) -> dict:
    """Per GPU pass, its float32 roofline on an H100 SXM (``tconv._roofline``): FLOPs, fewest
    bytes moved and the lower-bound time with TF32 and with IEEE products, so the CPU figures
    and a GPU run read against one limit."""
    floors = {}
    for pass_name in ("forward", "dgrad", "wgrad"):
        tf32, ieee = (roofline(spec, precision, pass_name)
                      for precision in ("float32-tf32", "float32-ieee"))
        floors[pass_name] = {"flops": tf32.flops, "bytes": tf32.bytes,
                             "tf32_ms": tf32.seconds * 1e3, "ieee_ms": ieee.seconds * 1e3}
    return floors


def ratio(row: dict, pass_name: str, name: str) -> float | None:
    """The fastest CPU peer's time over ``name``'s (peers on the GPU compare with GPU columns)."""
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


def pass_flops(row: dict, pass_name: str) -> int:
    # backward = dx (a forward-sized GEMM) + dkernel (another): three forwards in all
    return row["flops_forward"] * (1 if pass_name == "forward" else 3)


def machine() -> dict:
    described = {"platform": platform.platform(), "processor": platform.processor(),
                 "cpus": os.cpu_count(), "python": platform.python_version(),
                 "numpy": np.__version__, "load_average": list(os.getloadavg())}
    if importable("torch"):
        import torch

        described.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
        if torch.cuda.is_available():
            described["gpu"] = torch.cuda.get_device_name()
    if importable("tensorflow"):
        described["tensorflow"] = __import__("tensorflow").__version__
    return described
