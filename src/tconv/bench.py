"""The benchmark harness behind ``tconv bench``, ``benchmarks/test_bench_cpu.py`` and
``tools/bench_rss.py``: the cases (the seed tutorials' 2-D layers; HiFi-GAN's 1-D and a 3-D
U-Net's upsampling layers), the columns (tconv on NumPy and on torch CPU inputs, the peers at
their best) and the timing.

Every case runs every column in the same process, so the ratios compare like with like on
whatever load the machine carries. The peers: torch ``conv_transpose1d/2d/3d`` in its default
channels-first layout (NCL, NCHW, NCDHW) and fed the channels-last data as it is (NHWC and NDHWC
as ``channels_last`` / ``channels_last_3d`` memory, NWC as a permuted view: what a user with
channels-last data passes; oneDNN's layout, faster on most 2-D layers), Keras' padding a crop of
torch's full output; and TensorFlow ``tf.nn.conv_transpose`` (what Keras' layers call) in
channels-last when tensorflow is importable. With CUDA present, tconv's Triton
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
    """One layer, float32, channels-last: ``rank`` spatial axes of input size ``size`` each (or
    one size per axis), a cubic kernel of side ``kernel_size``, the same stride on every axis."""

    name: str
    batch: int
    size: int | tuple[int, ...]
    in_channels: int
    filters: int
    kernel_size: int
    strides: int
    padding: str
    rank: int = 2

    def __post_init__(self):
        if not isinstance(self.size, int) and len(self.size) != self.rank:
            raise ValueError(f"size must be one int or {self.rank} (one per spatial axis), got "
                             f"{self.size!r}")

    @property
    def in_spatial(self) -> tuple[int, ...]:
        return (self.size,) * self.rank if isinstance(self.size, int) else tuple(self.size)

    @property
    def spec(self):
        return tconv.make_spec((self.batch, *self.in_spatial, self.in_channels),
                               (*(self.kernel_size,) * self.rank, self.filters,
                                self.in_channels),
                               strides=self.strides, padding=self.padding,
                               data_format="channels_last")

    def scaled(self, *, batch: int, size: int) -> Case:
        return replace(self, name=f"{self.name} {batch}x{size}^{self.rank}", batch=batch,
                       size=size)


# Issue 17's set: float32, NHWC, the seed tutorials' layers.
CASES_2D = (
    Case("dcgan_g2", 256, 7, 128, 64, 5, 2, "same"),
    Case("dcgan_g3", 256, 14, 64, 1, 5, 2, "same"),
    Case("cvae_d1", 32, 7, 32, 64, 3, 2, "same"),
    Case("pix2pix_u6", 1, 64, 256, 64, 4, 2, "same"),
    Case("pix2pix_out", 1, 128, 128, 3, 4, 2, "same"),
    Case("unet_up1", 4, 28, 1024, 512, 2, 2, "valid"),
    Case("seg_up4", 16, 64, 64, 32, 3, 2, "same"),
    Case("fcn_x8", 1, 32, 32, 21, 16, 8, "same"),
)
# Issue 16's set, ranks 1 and 3, channels-last. HiFi-GAN's generator upsamples 32 mel frames to
# 8192 samples with four layers (torch padding (k - s) // 2, which is Keras' 'same' for these);
# a 3-D U-Net's decoder upsamples 64^3 to 128^3 at 32 channels (k2 s2 'valid', or k3 s2 'same').
CASES_RANKS = (
    Case("hifigan_up1", 16, 32, 512, 256, 16, 8, "same", rank=1),
    Case("hifigan_up2", 16, 256, 256, 128, 16, 8, "same", rank=1),
    Case("hifigan_up3", 16, 2048, 128, 64, 4, 2, "same", rank=1),
    Case("hifigan_up4", 16, 4096, 64, 32, 4, 2, "same", rank=1),
    Case("unet3d_k2", 2, 64, 32, 32, 2, 2, "valid", rank=3),
    Case("unet3d_k3", 2, 64, 32, 32, 3, 2, "same", rank=3),
)
CASES = CASES_2D + CASES_RANKS
# Each issue's target reads the geomean over its own set.
CASE_SETS = {"2-D": tuple(c.name for c in CASES_2D),
             "ranks 1, 3": tuple(c.name for c in CASES_RANKS)}
QUICK = ("dcgan_g3", "cvae_d1", "pix2pix_out", "fcn_x8", "hifigan_up1")
PASSES = ("forward", "forward+backward")


def case_inputs(case: Case, seed: int = 0):
    """float32 channels-last input, Keras-layout kernel, bias and an upstream gradient, as NumPy
    arrays."""
    rng = np.random.default_rng(seed)
    spec = case.spec
    return (rng.standard_normal(spec.input_shape, dtype=np.float32),
            rng.standard_normal(spec.kernel_shape, dtype=np.float32) / math.sqrt(
                math.prod(spec.kernel_size) * case.in_channels),
            rng.standard_normal((case.filters,), dtype=np.float32),
            rng.standard_normal(spec.output_shape, dtype=np.float32))


def _options(case: Case) -> dict:
    return dict(strides=case.strides, padding=case.padding, data_format="channels_last")


def tconv_numpy(case: Case, x, kernel, bias, dy):
    """pass name -> callable, tconv on NumPy arrays."""
    options = _options(case)

    def forward():
        return tconv.conv_transpose(x, kernel, bias, backend="cpu", **options)

    def backward():
        return tconv.conv_transpose_backward(dy, x, kernel, backend="cpu", **options)

    def forward_backward():
        forward()
        return backward()

    return {"forward": forward, "backward": backward, "forward+backward": forward_backward}


def _torch_autograd_passes(torch, run, inputs, dy):
    """pass name -> callable for ``run(*inputs)`` under torch autograd, backpropagating ``dy``.
    The backward pass records its graph on its first call (a warm-up), so a run without it holds
    no graph (a 3-D layer's is half a gigabyte)."""
    leaves = [a.detach().clone().requires_grad_(True) for a in inputs]
    recorded = []

    def forward():
        with torch.no_grad():
            return run(*inputs)

    def backward():
        if not recorded:
            recorded.append(run(*leaves))
        return torch.autograd.grad(recorded[0], leaves, dy, retain_graph=True)

    def forward_backward():
        return torch.autograd.grad(run(*leaves), leaves, dy)

    return {"forward": forward, "backward": backward, "forward+backward": forward_backward}


def tconv_torch(case: Case, x, kernel, bias, dy, device="cpu", backend="cpu"):
    """tconv on torch tensors (its custom op, autograd through tconv's backward)."""
    import torch

    options = _options(case)
    tensors = [torch.from_numpy(a).to(device) for a in (x, kernel, bias)]
    return _torch_autograd_passes(
        torch, lambda *a: tconv.conv_transpose(*a, backend=backend, **options), tensors,
        torch.from_numpy(dy).to(device))


def torch_conv_transpose(case: Case, x, kernel, bias, dy, device="cpu", dtype=None,
                         channels_last=False):
    """The torch peer: ``conv_transpose1d/2d/3d`` on channels-first tensors, either contiguous
    (NCL, NCHW, NCDHW) or the channels-last arrays as they are, viewed in channels-first order
    (``channels_last`` / ``channels_last_3d`` memory; rank 1 has no such format, so NWC is a
    permuted view); Keras' output is a crop of torch's full one."""
    import torch

    spec = case.spec
    rank = spec.rank
    dtype = dtype or torch.float32

    def as_torch(a):   # .to keeps the strides of a permuted dense view
        viewed = torch.from_numpy(a).permute(0, rank + 1, *range(1, rank + 1)).to(device, dtype)
        return viewed if channels_last else viewed.contiguous()

    # Keras' (*kernel_size, filters, in_channels) -> torch's (in_channels, filters, *kernel_size),
    # in the data's memory format, as a module converted with .to(memory_format=...) holds it.
    weight_layout = (torch.contiguous_format if not channels_last or rank == 1
                     else torch.channels_last if rank == 2 else torch.channels_last_3d)
    weight = (torch.from_numpy(kernel).permute(rank + 1, rank, *range(rank)).to(device, dtype)
              .contiguous(memory_format=weight_layout))
    bias_t = torch.from_numpy(bias).to(device, dtype)
    conv_transpose = getattr(torch.nn.functional, f"conv_transpose{rank}d")
    crop = (slice(None), slice(None), *(slice(before, before + out) for before, out in
                                        zip(spec.pad_before, spec.out_spatial)))

    def run(x_, weight_, bias_):
        return conv_transpose(x_, weight_, bias_, stride=spec.strides)[crop]

    return _torch_autograd_passes(torch, run, [as_torch(x), weight, bias_t], as_torch(dy))


def tensorflow_conv_transpose(case: Case, x, kernel, bias, dy):
    """The TensorFlow peer: ``tf.nn.conv_transpose`` (what Keras' layers call; by rank
    ``conv1d_transpose``, ``conv2d_transpose`` or ``conv3d_transpose``), channels-last. The
    backward pass records its tape on its first call, as torch's above."""
    import tensorflow as tf

    spec = case.spec
    constants = [tf.constant(a) for a in (x, kernel, bias)]
    leaves = [tf.Variable(a) for a in constants]
    dy_tf = tf.constant(dy)
    padding = spec.padding.upper()
    recorded = []

    def run(x_, kernel_, bias_):
        y = tf.nn.conv_transpose(x_, kernel_, spec.output_shape, spec.strides, padding=padding)
        return tf.nn.bias_add(y, bias_)

    def forward():
        return run(*constants).numpy()

    def backward():
        if not recorded:
            with tf.GradientTape(persistent=True) as tape:
                recorded.append((tape, run(*leaves)))
        tape, y = recorded[0]
        return [g.numpy() for g in tape.gradient(y, leaves, output_gradients=dy_tf)]

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
    "torch channels_first": (torch_conv_transpose, True, "torch"),
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
    warm-up call first (autotuning, allocator, caches), which also times it; one that raises is
    reported in ``errors`` and dropped. A turn settles (:func:`settle`), then times at least
    ``min_repeats / ROUNDS`` calls and up to ``budget_s / ROUNDS`` seconds (at most 50 calls in
    all). A column whose one call outlasts that share (a 3-D layer's second-long calls) times
    one call a turn: ``ROUNDS`` calls in all.
    """
    live = {}
    for name, (fn, sync) in calls.items():
        try:
            live[name] = (fn, sync, timed_call(fn, sync))
        except Exception as error:  # a column this machine cannot run: reported, not fatal
            errors[name] = f"{type(error).__name__}: {error}"
    times = {name: [] for name in live}
    turn_s = budget_s / ROUNDS
    for _ in range(ROUNDS):
        for name, (fn, sync, call_s) in live.items():
            per_turn = 1 if call_s > turn_s else -(-min_repeats // ROUNDS)
            settle(fn, sync, settle_s, call_s)
            started = time.perf_counter()
            timed = []
            while len(timed) < per_turn or (time.perf_counter() - started < turn_s
                                            and len(timed) < 50 // ROUNDS):
                timed.append(timed_call(fn, sync))
            times[name] += timed
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def timed_call(fn, sync) -> float:
    started = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - started


def settle(fn, sync, seconds: float, call_s: float) -> None:
    """Let the previous column's threads stop spinning before ``fn`` is timed: call ``fn`` (at
    least once when ``seconds`` > 0) until ``seconds`` have passed, or, for a call that alone
    lasts ``call_s`` > ``seconds``, wait idle that long (the same effect, without a whole call)."""
    if call_s > seconds:
        time.sleep(seconds)
    else:
        run_for(fn, sync, seconds)


def run_for(fn, sync, seconds: float) -> None:
    """Call ``fn`` (at least once when ``seconds`` > 0) until ``seconds`` have passed."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        fn()
        if sync is not None:
            sync()


def max_abs_errors(case: Case, inputs, forwards: dict, peers) -> dict:
    """Max abs error of each column's forward (``name -> callable``) against torch in float64.
    torch's own convolutions (the torch peers) answer in channels-first order, every other
    column in the caller's channels-last order."""
    import torch

    x, kernel, bias, _ = inputs
    no_gradient = np.zeros((1,) * (case.rank + 2), np.float32)   # only the forward runs here
    exact = torch_conv_transpose(case, x, kernel, bias, no_gradient,
                                 dtype=torch.float64)["forward"]().movedim(1, -1).numpy()
    errors = {}
    for name, forward in forwards.items():
        y = forward()
        if isinstance(y, torch.Tensor):
            y = (y.movedim(1, -1) if name in peers else y).detach().cpu().numpy()
        errors[name] = float(np.abs(np.asarray(y) - exact).max())
    return errors


def run_case(case: Case, *, min_repeats: int, budget_s: float, passes=PASSES,
             columns=None) -> dict:
    """One row: every column's median time per pass (``columns``: the implementations' names to
    run, default all), and each column's float32 error when torch is there."""
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
        row["max_abs_error"] = max_abs_errors(
            case, inputs, {name: built["forward"] for name, (built, _) in runnable.items()
                           if name not in row["errors"]}, row["peers"])
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
