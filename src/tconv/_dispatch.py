"""The public operator: arrays checked, spec built, a backend chosen, the result returned in the
caller's namespace. Data flows one way: API -> spec -> dispatch -> (cpu | triton) -> result."""

from __future__ import annotations

import functools
import importlib.util
import sys

import array_api_compat
import numpy as np

from . import _cpu
from ._spec import make_spec, normalize_backend


def _namespace(**arrays):
    """The one array namespace of the named arrays (None entries skipped), with named errors."""
    namespaces = {}
    for name, array in arrays.items():
        if array is None:
            continue
        if not array_api_compat.is_array_api_obj(array):
            raise TypeError(
                f"{name} must be an array (NumPy, torch, CuPy, JAX, Dask, array-api-strict...), "
                f"got {type(array).__name__}"
            )
        namespaces[name] = array_api_compat.array_namespace(array)
    kinds = set(map(id, namespaces.values()))
    if len(kinds) > 1:
        described = ", ".join(f"{name} is {type(arrays[name]).__module__}."
                              f"{type(arrays[name]).__name__}" for name in namespaces)
        raise TypeError(f"all arrays must come from the same array library: {described}")
    return next(iter(namespaces.values()))


def _torch_tensors(**arrays):
    """torch, when every named array is a torch tensor (None entries skipped), else None.

    Told by ``isinstance`` alone: ``array_api_compat``'s type checks are ``lru_cache``-wrapped,
    and torch.compile warns about each one it meets in a traced region."""
    torch = sys.modules.get("torch")
    if torch is not None and all(a is None or isinstance(a, torch.Tensor)
                                 for a in arrays.values()):
        return torch
    return None


def _same_dtype(a, b) -> bool:
    """Equal dtypes, NumPy's byte orders aside (a ``>f4`` array is float32 to tconv)."""
    if isinstance(a, np.dtype) and isinstance(b, np.dtype):
        return a.newbyteorder("=") == b.newbyteorder("=")
    return a == b


def _check_arrays(reference_name: str, *, is_floating, device, **arrays):
    """Float dtype, all equal to the reference's, and one device where both arrays know theirs
    (a JAX tracer has none: XLA places it)."""
    reference = arrays[reference_name]
    if not is_floating(reference):
        raise TypeError(f"{reference_name} must have a real floating dtype, got dtype "
                        f"{reference.dtype}")
    where = device(reference)
    for name, array in arrays.items():
        if array is None or name == reference_name:
            continue
        if not _same_dtype(array.dtype, reference.dtype):
            raise TypeError(f"{name} must have the dtype of {reference_name} ({reference.dtype}), "
                            f"got dtype {array.dtype}: tconv does not mix float dtypes")
        if where is not None and device(array) is not None and device(array) != where:
            raise ValueError(f"{name} must be on the device of {reference_name} ({where}), "
                             f"got {device(array)}")


def _check_torch_arrays(reference_name: str, **arrays):
    _check_arrays(reference_name, is_floating=lambda a: a.is_floating_point(),
                  device=lambda a: a.device, **arrays)


def _check_array_api_arrays(xp, reference_name: str, **arrays):
    _check_arrays(reference_name, is_floating=lambda a: xp.isdtype(a.dtype, "real floating"),
                  device=array_api_compat.device, **arrays)


def _in_native_byte_order(array):
    """A NumPy array in native byte order (a copy when it is not): the backends compute natively."""
    if isinstance(array, np.ndarray) and not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array


def _in_dtype_of(result, x):
    """A result computed in native byte order, back in the byte order of a NumPy ``x``."""
    if isinstance(x, np.ndarray) and not x.dtype.isnative:
        return result.astype(x.dtype)
    return result


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _select_backend(backend: str, x):
    """``"auto"`` runs the Triton kernels on CUDA torch tensors when triton is installed, the
    array-API path otherwise; ``"triton"`` never falls back."""
    backend = normalize_backend(backend)
    triton_installed = _triton_installed()
    if backend == "auto":
        on_cuda = array_api_compat.is_torch_array(x) and x.device.type == "cuda"
        backend = "triton" if on_cuda and triton_installed else "cpu"
    if backend == "triton":
        if not triton_installed:
            raise ValueError("backend='triton' is not available: the triton package is not "
                             "installed (pip install tconv[triton]); use backend='cpu' or 'auto'")
        from . import _triton

        return _triton
    return _cpu


def _framework_route(backend: str, x):
    """The front end for arrays that need more than the array API, or None.

    torch tensors go through a ``torch.library`` custom op (autograd, ``torch.compile``), Dask
    arrays through one task per batch chunk, CuPy and eager JAX GPU arrays through zero-copy torch
    views onto the GPU backend. Each route module exposes ``conv2d_transpose(x, kernel, bias, spec,
    output_padding, backend)`` and ``conv2d_transpose_backward(dy, x, kernel, spec, output_padding,
    backend)``, and is imported only when the caller's arrays come from its framework.
    """
    backend = normalize_backend(backend)  # a lazy route (Dask) must not defer this error
    if array_api_compat.is_dask_array(x):
        from . import _dask

        return _dask
    if backend != "cpu" and (array_api_compat.is_cupy_array(x)
                             or array_api_compat.is_jax_array(x)):
        from . import _interop

        return _interop if _interop.is_foreign_gpu_array(x) else None
    return None


def _checked_route(backend: str, **arrays):
    """The arrays checked (one array library; x's float dtype and device for all), then their
    framework route, or None for the array-API backends. torch tensors are told apart first and
    checked with torch alone, so that a torch.compile region traces no ``array_api_compat``."""
    if _torch_tensors(**arrays) is not None:
        _check_torch_arrays("x", **arrays)
        normalize_backend(backend)
        from . import _torch_op

        return _torch_op
    _check_array_api_arrays(_namespace(**arrays), "x", **arrays)
    return _framework_route(backend, arrays["x"])


def _spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate, groups):
    return make_spec(x.shape, kernel.shape, strides=strides, padding=padding,
                     output_padding=output_padding, data_format=data_format,
                     dilation_rate=dilation_rate, groups=groups)


def conv2d_transpose(x, kernel, bias=None, *, strides=1, padding="valid", output_padding=None,
                     data_format=None, dilation_rate=1, groups=1, backend="auto"):
    """Keras ``Conv2DTranspose`` as a function: the transposed 2D convolution of ``x``.

    Args:
        x: rank-4 array, ``(N, H, W, C)`` for ``channels_last`` or ``(N, C, H, W)`` for
            ``channels_first``; any array-API array (NumPy, torch, JAX, CuPy, array-api-strict).
            A Dask array gives a lazy Dask result, one task per batch chunk; an input chunked
            along other axes too is first rechunked to whole images (along the batch only).
        kernel: ``(kernel_h, kernel_w, filters // groups, in_channels)``, Keras' layout.
        bias: ``(filters,)`` or None.
        strides, dilation_rate: int or 2-tuple of positive ints. Unlike Keras, dilation may be
            combined with a stride > 1.
        padding: ``"valid"`` or ``"same"``, case-insensitive; ``"same"`` splits as TensorFlow.
        output_padding: None, or int / 2-tuple of ints ``>= 0`` and lower than the stride.
        data_format: ``"channels_last"``, ``"channels_first"``, or None for Keras' configured
            ``image_data_format`` (``$KERAS_HOME/keras.json``, else ``channels_last``).
        groups: int dividing the input channels (channel group ``g`` of ``x`` feeds filter group
            ``g``), as in PyTorch.
        backend: ``"auto"``, ``"cpu"`` or ``"triton"``.

    Returns:
        The output, of the caller's namespace, device and dtype (half precision accumulates in
        float32), shape ``conv2d_transpose_output_shape(...)``.

    Raises:
        TypeError / ValueError naming the argument and the rule, before any compute.
    """
    route = _checked_route(backend, x=x, kernel=kernel, bias=bias)
    spec = _spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate, groups)
    if bias is not None and tuple(bias.shape) != (spec.filters,):
        raise ValueError(f"bias must have shape (filters,) = ({spec.filters},), got "
                         f"{tuple(bias.shape)}")
    if route is not None:
        return route.conv2d_transpose(x, kernel, bias, spec, output_padding, backend)
    y = _select_backend(backend, x).conv2d_transpose(
        *(_in_native_byte_order(a) for a in (x, kernel, bias)), spec)
    return _in_dtype_of(y, x)


def conv2d_transpose_backward(dy, x, kernel, *, strides=1, padding="valid", output_padding=None,
                              data_format=None, dilation_rate=1, groups=1, backend="auto"):
    """Gradients of :func:`conv2d_transpose` for an upstream gradient ``dy``.

    Takes the forward's arguments (no bias: its gradient does not depend on it) and returns
    ``(dx, dkernel, dbias)``, shaped like ``x``, ``kernel`` and ``(filters,)``; ``dbias`` is
    ``dy`` summed over batch and space and is always returned.
    """
    route = _checked_route(backend, x=x, kernel=kernel, dy=dy)
    spec = _spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate, groups)
    if tuple(dy.shape) != spec.output_shape:
        raise ValueError(f"dy must have the forward's output shape {spec.output_shape} "
                         f"({spec.data_format}), got {tuple(dy.shape)}")
    if route is not None:
        return route.conv2d_transpose_backward(dy, x, kernel, spec, output_padding, backend)
    gradients = _select_backend(backend, x).conv2d_transpose_backward(
        *(_in_native_byte_order(a) for a in (dy, x, kernel)), spec)
    return tuple(_in_dtype_of(g, x) for g in gradients)



