"""Host-side launch helpers shared by the launchers: layouts, dtypes, index width, the GEMM
kernels' launch grid and geometry keywords."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import triton.language as tl

_INT32_LIMIT = 2**31


@dataclass(frozen=True)
class Volume:
    """A spec's geometry over (depth, height, width): ranks 1 and 2 get leading unit axes (size
    1, kernel 1, stride 1, dilation 1, no padding), so that one kernel set serves every rank."""

    kernel: tuple[int, int, int]
    strides: tuple[int, int, int]
    dilation: tuple[int, int, int]
    in_size: tuple[int, int, int]
    out_size: tuple[int, int, int]
    pad_before: tuple[int, int, int]

    @property
    def depth_walked(self) -> bool:
        """The kernels' ``DEPTH``: whether any depth arithmetic is needed (a depth, kernel depth,
        output depth or depth stride past 1: a stride puts its phases on the forward's grid,
        even when ``output_shape`` keeps a depth of 1). Without it the depth padding is 0."""
        return max(self.kernel[0], self.in_size[0], self.out_size[0], self.strides[0]) > 1

    @property
    def taps(self) -> int:
        return math.prod(self.kernel)


@functools.lru_cache(maxsize=256)
def volume(spec) -> Volume:
    """The (depth, height, width) geometry of ``spec``, of any rank (kept per spec: a launch's
    host work is on the critical path of small passes)."""
    units = 3 - spec.rank

    def padded(values, unit):
        return (unit,) * units + tuple(values)

    return Volume(kernel=padded(spec.kernel_size, 1), strides=padded(spec.strides, 1),
                  dilation=padded(spec.dilation_rate, 1), in_size=padded(spec.in_spatial, 1),
                  out_size=padded(spec.out_spatial, 1), pad_before=padded(spec.pad_before, 0))


def _channel_axis(data_format: str) -> int:
    return 1 if data_format == "channels_first" else -1


def as_volume(tensor: torch.Tensor, spec) -> torch.Tensor:
    """``tensor`` (an image of ``spec``'s rank and layout) viewed with 5 axes: unit axes before
    its spatial ones (a view, nothing copied; a unit axis's stride is never read)."""
    first_spatial = 2 if spec.data_format == "channels_first" else 1
    for _ in range(3 - spec.rank):
        tensor = tensor.unsqueeze(first_spatial)
    return tensor


def axis_strides(tensor: torch.Tensor, data_format: str) -> dict[str, int]:
    """The element strides of a 5-axis volume (:func:`as_volume`) by axis name, ``N``, ``D``,
    ``H``, ``W``, ``C``, whatever its layout."""
    names = "NCDHW" if data_format == "channels_first" else "NDHWC"
    return dict(zip(names, tensor.stride()))


def unit_channel_stride(tensor: torch.Tensor, data_format: str) -> torch.Tensor:
    """``tensor`` (any rank) itself when its channels are adjacent in memory, else a
    channels-last copy (torch's ``channels_last`` / ``channels_last_3d`` for channels_first):
    the kernels gather their GEMM operands along the channels (why: CONTRIBUTING, Tuning
    notes)."""
    axis = _channel_axis(data_format)
    if tensor.stride(axis) == 1:
        return tensor
    return tensor.movedim(axis, -1).contiguous().movedim(-1, axis)


def empty_image(like: torch.Tensor, shape, data_format: str) -> torch.Tensor:
    """A new image of ``shape`` (any rank, in ``data_format`` order) with channels adjacent in
    memory, so the kernels' epilogue stores are coalesced: channels_first results are
    channels-last in memory (torch's ``channels_last`` / ``channels_last_3d``)."""
    axis = _channel_axis(data_format)
    shape = list(shape)
    shape.append(shape.pop(axis))
    return torch.empty(shape, dtype=like.dtype, device=like.device).movedim(-1, axis)


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """The one accumulation rule: float64 accumulates in float64, every other float type in
    float32 (also the dtype of the split reductions' partial sums)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


_TRITON_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


def accumulator(dtype: torch.dtype):
    """:func:`accumulator_dtype` as the kernels' ``ACC`` constexpr."""
    return _TRITON_DTYPES[accumulator_dtype(dtype)]


def input_precision(dtype: torch.dtype) -> str | None:
    """For float32, IEEE products unless the caller lets torch's matmuls use TF32; half types
    keep ``tl.dot``'s default (their products are exact in the fp32 accumulator)."""
    if dtype != torch.float32:
        return None
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def needs_64bit_index(*tensors: torch.Tensor) -> bool:
    """Whether some offset may reach 2**31: then the kernels compute offsets in int64."""
    return any(t is not None and _span(t) >= _INT32_LIMIT for t in tensors)


def gemm_geometry(geometry: Volume, dtype: torch.dtype, *tensors: torch.Tensor) -> dict:
    """The keywords every implicit-GEMM kernel takes: kernel size, strides, dilation per axis
    (depth, height, width), whether depth is walked, accumulator, product precision and index
    width."""
    return dict(_geometry_keywords(geometry), ACC=accumulator(dtype),
                INPUT_PRECISION=input_precision(dtype), INDEX_64=needs_64bit_index(*tensors))


@functools.lru_cache(maxsize=256)
def _geometry_keywords(geometry: Volume) -> dict:
    """:func:`gemm_geometry`'s keywords fixed by the geometry (the caller copies the dict)."""
    return dict(
        **{f"K{axis}": size for axis, size in zip("DHW", geometry.kernel)},
        **{f"STRIDE_{axis}": stride for axis, stride in zip("DHW", geometry.strides)},
        **{f"DIL_{axis}": dilation for axis, dilation in zip("DHW", geometry.dilation)},
        DEPTH=geometry.depth_walked,
    )


def ceil_div(a: int, b: int) -> int:
    """``triton.cdiv`` for the host: triton's is a ``constexpr_function`` (3.9), whose wrapper
    costs microseconds a call on every launch."""
    return -(-a // b)


def gemm_grid(gemm_m: int, gemm_n: int, *batches: int):
    """The launch grid of a GEMM kernel: axis 0 the ``BLOCK_M x BLOCK_N`` tiles of the autotuned
    config, then ``batches`` (phases, taps, groups, splits: each kernel's own)."""
    def grid(meta):
        return (ceil_div(gemm_m, meta["BLOCK_M"]) * ceil_div(gemm_n, meta["BLOCK_N"]),
                *batches)
    return grid


def _span(tensor: torch.Tensor) -> int:
    """One past the largest element offset the tensor's strides reach."""
    if tensor.is_contiguous():
        return tensor.numel()
    if tensor.numel() == 0:
        return 0
    return 1 + sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape,
                                                                     tensor.stride()))
