"""Array-API building blocks of the CPU path: the channels-last working layout ``(N, *spatial,
C)``, the dtype rule, writes into buffers made here, and the one grouped GEMM every product goes
through."""

from __future__ import annotations

import ctypes
import functools
import math
import sys
import threading

import array_api_extra as xpx
from array_api_compat import device, is_jax_namespace, is_torch_namespace

from .._spec import ConvTransposeSpec
from ._blas import matmul


def to_channels_last(xp, a, spec: ConvTransposeSpec):
    """``a`` in ``spec``'s layout as a channels-last view ``(N, *spatial, C)``."""
    if spec.data_format == "channels_last":
        return a
    return xp.permute_dims(a, (0, *range(2, spec.rank + 2), 1))


def from_channels_last(xp, a, spec: ConvTransposeSpec):
    """A channels-last ``a`` as a view in ``spec``'s layout."""
    if spec.data_format == "channels_last":
        return a
    return xp.permute_dims(a, (0, spec.rank + 1, *range(1, spec.rank + 1)))


def compute_dtype(xp, dtype):
    """Half precision types accumulate in float32; float32 and float64 compute as they are."""
    if dtype == xp.float32 or dtype == xp.float64:
        return dtype
    return xp.float32


def itemsize(xp, dtype) -> int:
    return 8 if dtype == xp.float64 else 4


# Linux's transparent huge pages: 2 MiB pages, advised per range (MADV_HUGEPAGE from <sys/mman.h>).
_HUGE_PAGE = 2 * 2**20
_MADV_HUGEPAGE = 14


def empty(xp, shape, dtype, device_):
    """``xp.empty`` for a buffer or result made here, on huge pages where the system gives them
    when asked (Linux THP in ``madvise`` mode): each call's large buffers are fresh memory, and
    4 KiB pages cost a page fault each on first write. NumPy advises its buffers of 4 MiB and
    more itself; torch only under ``THP_MEM_ALLOC_ENABLE=1``, so its CPU tensors are advised
    here (unet3d's 537 MB output: 131k faults, 357 ms of CPU, against 79 ms on huge pages)."""
    out = xp.empty(shape, dtype=dtype, device=device_)
    if is_torch_namespace(xp) and out.device.type == "cpu" and sys.platform == "linux":
        start = -(-out.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
        end = (out.data_ptr() + math.prod(shape) * out.element_size()) // _HUGE_PAGE * _HUGE_PAGE
        if end > start:         # advice only: a kernel that refuses it changes nothing
            _libc().madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_HUGEPAGE)
    return out


class Scratch:
    """Temporaries that a call's pieces reuse, one buffer per name and per thread (pieces shared
    over threads, :func:`._blas.share`, run at the same time): a piece's temporary is a view of
    the previous piece's buffer (the first piece is the largest) where it holds enough, else of a
    new one (:func:`empty`). Reuse saves page faults and, on torch, memory: torch's CPU tensors
    come from ``posix_memalign``, and glibc before 2.38 (2.36 on the dev VM) does not give a
    freed block to an aligned request of its own size once anything is allocated behind it, so a
    fresh tensor per piece took new heap for every piece (dcgan_g2: 8 MB more resident per
    piece)."""

    def __init__(self):
        self._buffers = {}

    def view(self, xp, name: str, shape, dtype, device_):
        """A ``shape`` array of ``dtype`` for this thread's temporary ``name``."""
        key, size = (threading.get_ident(), name), math.prod(shape)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape[0] < size:
            buffer = self._buffers[key] = empty(xp, (size,), dtype, device_)
        return xp.reshape(buffer[:size], shape)


def zeros(xp, shape, dtype, device_):
    """``xp.zeros`` as :func:`empty` makes it (torch fills on the CPU anyway)."""
    if is_torch_namespace(xp):
        return empty(xp, shape, dtype, device_).zero_()
    return xp.zeros(shape, dtype=dtype, device=device_)


@functools.cache
def _libc():
    return ctypes.CDLL(None)


def add_into(xp, buffer, index, values):
    """``buffer[index] += values`` for a buffer made here: into a view of it where the namespace
    writes in place (``array_api_extra.at`` would also write the view back onto itself), else
    functionally (JAX)."""
    if is_jax_namespace(xp):
        return xpx.at(buffer)[index].add(values)
    target = buffer[index]
    target += values
    return buffer


def set_into(xp, buffer, index, values):
    """``buffer[index] = values`` for a buffer made here, in place but on JAX."""
    if is_jax_namespace(xp):
        return xpx.at(buffer)[index].set(values)
    buffer[index] = values
    return buffer


def in_caller_layout(xp, a_channels_last, spec: ConvTransposeSpec, dtype):
    """A new C-contiguous ``dtype`` array holding the channels-last view ``a_channels_last`` in
    the caller's layout, as TensorFlow and torch return theirs."""
    a = from_channels_last(xp, a_channels_last, spec)
    out = empty(xp, a.shape, dtype, device(a))
    return set_into(xp, out, ..., xp.astype(a, dtype, copy=False))


def by_group(xp, a, groups: int, axis: int):
    """``a`` with its axis ``axis`` (G*n long, group-major) split into (G, n) and G moved first."""
    shape = a.shape[:axis] + (groups, a.shape[axis] // groups) + a.shape[axis + 1:]
    order = (axis,) + tuple(i for i in range(len(shape)) if i != axis)
    return xp.permute_dims(xp.reshape(a, shape), order)


def pixels_by_group(xp, x_channels_last, groups: int):
    """A channels-last input (or a piece of it) as (G, pixels, Cg)."""
    return by_group(xp, xp.reshape(x_channels_last, (-1, x_channels_last.shape[-1])), groups, 1)


def kernel_by_group(xp, kernel, groups: int):
    """A Keras-layout kernel (*taps, Fg, Cin) as (G, taps*Fg, Cg): one row per tap and filter."""
    return by_group(xp, xp.reshape(kernel, (-1, kernel.shape[-1])), groups, 1)


def grouped_matmul(xp, a, b):
    """``a`` (G, P, K) times ``b`` (G, K, Q) -> (G, P, Q), one GEMM per group.

    Callers pass views (permuted, reshaped) of their arrays. With one group the product is a 2-D
    one of the views, which BLAS takes without copying even when transposed; a batched matmul of
    one matrix may copy it first.
    """
    if a.shape[0] == 1:
        return xp.expand_dims(matmul(xp, a[0, ...], b[0, ...]), axis=0)
    return matmul(xp, a, b)
