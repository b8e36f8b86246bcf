"""Host-side launch helpers shared by the launchers: layouts, dtypes, index width."""

from __future__ import annotations

import torch
import triton.language as tl

_INT32_LIMIT = 2**31


def nhwc_strides(tensor: torch.Tensor, data_format: str) -> tuple[int, int, int, int]:
    """The element strides of an image tensor in (N, H, W, C) order, whatever its layout."""
    if data_format == "channels_first":
        n, c, h, w = tensor.stride()
        return n, h, w, c
    return tuple(tensor.stride())


def unit_channel_stride(tensor: torch.Tensor, data_format: str) -> torch.Tensor:
    """``tensor`` itself when its channels are adjacent in memory, else a channels-last copy.

    The GEMM operands are gathered channel-contiguous: with unit channel stride the loads
    vectorize and the K loop pipelines (cp.async, 3+ stages); with channels_first memory they
    would be element-wise gathers, far slower than the one copy pass.
    """
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


def accumulator(dtype: torch.dtype):
    """float64 accumulates in float64; every other float type in float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def partial_dtype(dtype: torch.dtype) -> torch.dtype:
    """The torch dtype of :func:`accumulator`, for the split reductions' partial sums."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def input_precision(dtype: torch.dtype) -> str | None:
    """For float32, IEEE products unless the caller lets torch's matmuls use TF32; half types
    keep ``tl.dot``'s default (their products are exact in the fp32 accumulator)."""
    if dtype != torch.float32:
        return None
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def needs_64bit_index(*tensors: torch.Tensor) -> bool:
    """Whether some offset may reach 2**31: then the kernels compute offsets in int64."""
    return any(t is not None and _span(t) >= _INT32_LIMIT for t in tensors)


def _span(tensor: torch.Tensor) -> int:
    """One past the largest element offset the tensor's strides reach."""
    if tensor.numel() == 0:
        return 0
    return 1 + sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape,
                                                                     tensor.stride()))
