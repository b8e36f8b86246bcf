"""The roofline of one transposed-convolution pass: its FLOPs, the fewest bytes it must move, and
the lower-bound time on a GPU, so that measured times read as a share of the limit.

A pass cannot run faster than its FLOPs over the arithmetic peak of the unit that does them, nor
than its bytes over memory bandwidth; the larger of the two is the floor. FLOPs are
``spec.flops`` for each pass (forward, dgrad and wgrad do the same multiply-adds); bytes count
each operand read once and each result written once, in the operands' dtype.

Peaks are the datasheet's for an H100 SXM (dense, no sparsity): 989 TFLOP/s fp16/bf16 tensor
cores, 494 TFLOP/s TF32 tensor cores, 67 TFLOP/s fp32 FMA (what IEEE float32 products run on),
34 TFLOP/s fp64 FMA (the kernels' float64 path is a broadcast FMA, not the fp64 tensor cores'
67), and 3.35 TB/s of HBM3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._spec import ConvTransposeSpec

PASSES = ("forward", "dgrad", "wgrad")
# precision name -> bytes per element of the operands
ELEMENT_BYTES = {"float16": 2, "bfloat16": 2, "float32-tf32": 4, "float32-ieee": 4,
                 "float64": 8}


@dataclass(frozen=True)
class Machine:
    name: str
    flops_per_s: dict  # precision name -> peak FLOP/s
    bytes_per_s: float


H100_SXM = Machine(
    name="H100 SXM",
    flops_per_s={"float16": 989e12, "bfloat16": 989e12, "float32-tf32": 494e12,
                 "float32-ieee": 67e12, "float64": 34e12},
    bytes_per_s=3.35e12,
)


@dataclass(frozen=True)
class Roofline:
    flops: int
    bytes: int
    compute_s: float
    memory_s: float

    @property
    def seconds(self) -> float:
        """The lower-bound time: the larger of the compute and memory times."""
        return max(self.compute_s, self.memory_s)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory"

    def share(self, measured_s: float) -> float:
        """The fraction of the roofline a measured time reaches (1.0: at the limit)."""
        return self.seconds / measured_s


def pass_bytes(spec: ConvTransposeSpec, pass_name: str, element_bytes: int) -> int:
    """The fewest bytes ``pass_name`` moves: its operands read once, its results written once."""
    x, y, kernel = (math.prod(shape) for shape in (spec.input_shape, spec.output_shape,
                                                  spec.kernel_shape))
    elements = {
        "forward": x + kernel + spec.filters + y,       # x, kernel, bias -> y
        "dgrad": y + kernel + x,                         # dy, kernel -> dx
        "wgrad": y + x + kernel + spec.filters,          # dy, x -> dkernel, dbias
    }
    if pass_name not in elements:
        raise ValueError(f"pass_name must be one of {PASSES}, got {pass_name!r}")
    return elements[pass_name] * element_bytes


def roofline(spec: ConvTransposeSpec, precision: str, pass_name: str = "forward",
             machine: Machine = H100_SXM) -> Roofline:
    """The roofline of one pass of ``spec`` at ``precision`` (a key of :data:`ELEMENT_BYTES`:
    ``float16``, ``bfloat16``, ``float32-tf32``, ``float32-ieee``, ``float64``) on ``machine``."""
    if precision not in ELEMENT_BYTES:
        raise ValueError(f"precision must be one of {tuple(ELEMENT_BYTES)}, got {precision!r}")
    moved = pass_bytes(spec, pass_name, ELEMENT_BYTES[precision])
    return Roofline(flops=spec.flops, bytes=moved,
                    compute_s=spec.flops / machine.flops_per_s[precision],
                    memory_s=moved / machine.bytes_per_s)
