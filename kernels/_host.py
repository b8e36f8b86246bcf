"""Host-side launch helpers shared by the launchers: layouts, dtypes, index width, the GEMM
kernels' launch grid and geometry keywords."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_INT32_LIMIT = 2**31


def nhwc_strides(tensor: torch.Tensor, data_format: str) -> tuple[int, int, int, int]:
    """The element strides of an image tensor in (N, H, W, C) order, whatever its layout."""
    if data_format == "channels_first":
        n, c, h, w = tensor.stride()
        return n, h, w, c
    return tuple(tensor.stride())


def unit_channel_stride(tensor: torch.Tensor, data_format: str) -> torch.Tensor:
    """``tensor`` itself when its channels are adjacent in memory, else a channels-last copy:
    the kernels gather their GEMM operands along the channels (why: CONTRIBUTING, Tuning
    notes)."""
    if nhwc_strides(tensor, data_format)[3] == 1:
        return tensor
    if data_format == "channels_first":
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor.contiguous()


def empty_image(like: torch.Tensor, shape, data_format: str) -> torch.Tensor:
    """A new image of ``shape`` (in ``data_format`` order) with channels adjacent in memory, so
    the kernels' epilogue stores are coalesced: channels_first results are channels-last in
    memory (torch's ``channels_last`` format)."""
    memory_format = (torch.channels_last if data_format == "channels_first"
                     else torch.contiguous_format)
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)


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


def gemm_geometry(spec, dtype: torch.dtype, *tensors: torch.Tensor) -> dict:
    """The keywords every implicit-GEMM kernel takes: kernel size, strides, dilation,
    accumulator, product precision and index width."""
    return dict(
        KH=spec.kernel_height, KW=spec.kernel_width,
        STRIDE_H=spec.strides[0], STRIDE_W=spec.strides[1],
        DIL_H=spec.dilation_rate[0], DIL_W=spec.dilation_rate[1],
        ACC=accumulator(dtype), INPUT_PRECISION=input_precision(dtype),
        INDEX_64=needs_64bit_index(*tensors),
    )


def gemm_grid(gemm_m: int, gemm_n: int, *batches: int):
    """The launch grid of a GEMM kernel: axis 0 the ``BLOCK_M x BLOCK_N`` tiles of the autotuned
    config, then ``batches`` (phases, taps, groups, splits: each kernel's own)."""
    def grid(meta):
        return (triton.cdiv(gemm_m, meta["BLOCK_M"]) * triton.cdiv(gemm_n, meta["BLOCK_N"]),
                *batches)
    return grid


def _span(tensor: torch.Tensor) -> int:
    """One past the largest element offset the tensor's strides reach."""
    if tensor.numel() == 0:
        return 0
    return 1 + sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape,
                                                                     tensor.stride()))
