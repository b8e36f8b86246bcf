"""The public operator: arrays checked, spec built, a backend chosen, the result returned in the
caller's namespace. Data flows one way: API -> spec -> dispatch -> (cpu | triton) -> result."""

from __future__ import annotations

import sys

import array_api_compat
import numpy as np

from ._backends import select_backend
from ._options import validate_options
from ._spec import ConvTransposeSpec, spec_for


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


def _torch_tensors(arrays: dict) -> bool:
    """Whether every given array is a torch tensor (None entries skipped), told by
    ``isinstance`` alone: ``array_api_compat``'s type checks are ``lru_cache``-wrapped, and
    torch.compile warns about each one it meets in a traced region."""
    torch = sys.modules.get("torch")
    return torch is not None and all(a is None or isinstance(a, torch.Tensor)
                                     for a in arrays.values())


def _same_dtype(a, b) -> bool:
    """Equal dtypes, NumPy's byte orders aside (a ``>f4`` array is float32 to tconv)."""
    if isinstance(a, np.dtype) and isinstance(b, np.dtype):
        return a.newbyteorder("=") == b.newbyteorder("=")
    return a == b


def _check_dtypes_and_devices(reference_name: str, is_floating, device, arrays: dict):
    """Float dtype, all equal to the reference's, and one device wherever both arrays know
    theirs (a JAX tracer has none: XLA places it)."""
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


def _check_arrays(reference_name: str, **arrays) -> bool:
    """The arrays checked (one array library, the reference's float dtype and device for all);
    returns whether they are torch tensors, which are checked with torch alone so that a
    torch.compile region traces no ``array_api_compat``."""
    if _torch_tensors(arrays):
        _check_dtypes_and_devices(reference_name, lambda a: a.is_floating_point(),
                                  lambda a: a.device, arrays)
        return True
    xp = _namespace(**arrays)
    _check_dtypes_and_devices(reference_name, lambda a: xp.isdtype(a.dtype, "real floating"),
                              array_api_compat.device, arrays)
    return False


def _in_native_byte_order(array):
    """A NumPy array in native byte order (a copy when it is not): the backends compute natively;
    other arrays as they are."""
    if isinstance(array, np.ndarray) and not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array


def _in_dtype_of(result, x):
    """A result computed in native byte order, back in the byte order of a NumPy ``x``."""
    if isinstance(x, np.ndarray) and not x.dtype.isnative:
        return result.astype(x.dtype)
    return result


def _framework_route(x):
    """The route module for Dask arrays, else None.

    Dask arrays go through one task per batch chunk (CuPy and eager JAX GPU arrays go through
    zero-copy torch views onto the GPU backend: ``_implementation``). Routes and backends share
    one signature, ``conv2d_transpose(x, kernel, bias, spec)`` and
    ``conv2d_transpose_backward(dy, x, kernel, spec)``, and a route is imported only when the
    caller's arrays come from its framework.
    """
    if array_api_compat.is_dask_array(x):
        from . import _dask

        return _dask
    return None


def _implementation(spec: ConvTransposeSpec, x, is_torch: bool):
    """torch tensors go through ``torch.library`` custom ops (autograd, ``torch.func``,
    ``torch.compile``, ``torch.export``, ONNX); other arrays as ``_framework_route`` says."""
    if is_torch:
        from . import _torch_op

        return _torch_op
    route = _framework_route(x)
    if route is not None:
        return route
    if spec.backend != "cpu" and (array_api_compat.is_cupy_array(x)
                                  or array_api_compat.is_jax_array(x)):
        from . import _interop

        if _interop.is_foreign_gpu_array(x):
            return _interop
    return select_backend(spec.backend, x)


KERNEL_AXES = {1: "kernel_w", 2: "kernel_h, kernel_w", 3: "kernel_d, kernel_h, kernel_w"}


def _spec(rank, x, kernel, is_torch: bool, strides, padding, output_padding, data_format,
          dilation_rate, groups, backend, output_shape) -> ConvTransposeSpec:
    """The spec of a rank-``rank`` call; rank None is ``x``'s spatial axes (1, 2 or 3)."""
    if rank is None:
        rank = _rank_of(x)
    if data_format is None and is_torch:
        from ._torch_op import configured_data_format

        data_format = configured_data_format()
    if len(kernel.shape) != rank + 2:
        raise ValueError(f"kernel must have rank {rank + 2} ({KERNEL_AXES[rank]}, "
                         f"filters // groups, in_channels), got shape {tuple(kernel.shape)}")
    options = validate_options(rank, strides=strides, padding=padding,
                               output_padding=output_padding, data_format=data_format,
                               dilation_rate=dilation_rate, groups=groups, backend=backend,
                               output_shape=output_shape)
    return spec_for(options, x.shape, kernel.shape)


def _rank_of(x) -> int:
    """The rank of a transposed convolution taking ``x``: its spatial axes."""
    if len(x.shape) not in (3, 4, 5):
        raise ValueError(f"x must have rank 3, 4 or 5 (batch, 1 to 3 spatial axes, channels), "
                         f"got shape {tuple(x.shape)}")
    return len(x.shape) - 2


def _forward(rank, x, kernel, bias, *options):
    is_torch = _check_arrays("x", x=x, kernel=kernel, bias=bias)
    spec = _spec(rank, x, kernel, is_torch, *options)
    if bias is not None and tuple(bias.shape) != (spec.filters,):
        raise ValueError(f"bias must have shape (filters,) = ({spec.filters},), got "
                         f"{tuple(bias.shape)}")
    y = _implementation(spec, x, is_torch).conv2d_transpose(
        *(_in_native_byte_order(a) for a in (x, kernel, bias)), spec)
    return _in_dtype_of(y, x)


def _backward(rank, dy, x, kernel, *options):
    is_torch = _check_arrays("x", x=x, kernel=kernel, dy=dy)
    spec = _spec(rank, x, kernel, is_torch, *options)
    if tuple(dy.shape) != spec.output_shape:
        raise ValueError(f"dy must have the forward's output shape {spec.output_shape} "
                         f"({spec.data_format}), got {tuple(dy.shape)}")
    gradients = _implementation(spec, x, is_torch).conv2d_transpose_backward(
        *(_in_native_byte_order(a) for a in (dy, x, kernel)), spec)
    return tuple(_in_dtype_of(g, x) for g in gradients)


def _named(function, name: str, doc: str):
    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc
    return function


# The public functions: one forward and one backward per rank (None: ``x``'s spatial axes),
# their options passed on in ``_spec``'s order.

def _forward_form(rank, name: str, doc: str):
    def forward(x, kernel, bias=None, *, strides=1, padding="valid", output_padding=None,
                data_format=None, dilation_rate=1, groups=1, backend="auto", output_shape=None):
        return _forward(rank, x, kernel, bias, strides, padding, output_padding, data_format,
                        dilation_rate, groups, backend, output_shape)
    return _named(forward, name, doc)


def _backward_form(rank, name: str, doc: str):
    def backward(dy, x, kernel, *, strides=1, padding="valid", output_padding=None,
                 data_format=None, dilation_rate=1, groups=1, backend="auto", output_shape=None):
        return _backward(rank, dy, x, kernel, strides, padding, output_padding, data_format,
                         dilation_rate, groups, backend, output_shape)
    return _named(backward, name, doc)


conv_transpose = _forward_form(None, "conv_transpose", """
    Keras ``Conv1DTranspose`` / ``Conv2DTranspose`` / ``Conv3DTranspose`` as one function:
    the transposed convolution of ``x`` over its 1, 2 or 3 spatial axes.

    Args:
        x: rank 3, 4 or 5 (the rank of the convolution is ``x``'s minus 2): ``(N, *spatial, C)``
            for ``channels_last`` or ``(N, C, *spatial)`` for ``channels_first``; any array-API
            array, as :func:`conv2d_transpose` takes.
        kernel: ``(*kernel_size, filters // groups, in_channels)``, Keras' layout.
        bias: ``(filters,)`` or None.
        strides, dilation_rate, output_padding: an int or one int per spatial axis.
        padding, data_format, groups, backend: as :func:`conv2d_transpose`.
        output_shape: None, or one output size per spatial axis, as :func:`conv2d_transpose`.

    Returns:
        The output, of the caller's namespace, device and dtype, shape
        ``conv_transpose_output_shape(...)``.

    Raises:
        TypeError / ValueError naming the argument and the rule, before any compute.
    """)


conv_transpose_backward = _backward_form(None, "conv_transpose_backward", """
    Gradients ``(dx, dkernel, dbias)`` of :func:`conv_transpose` for an upstream gradient
    ``dy``, as :func:`conv2d_transpose_backward` for every rank.""")


conv1d_transpose = _forward_form(1, "conv1d_transpose", """
    Keras ``Conv1DTranspose`` as a function: :func:`conv_transpose` for a rank-3 ``x``
    ``(N, W, C)`` / ``(N, C, W)`` and a kernel ``(kernel_w, filters // groups, in_channels)``.""")


conv1d_transpose_backward = _backward_form(1, "conv1d_transpose_backward", """
    Gradients ``(dx, dkernel, dbias)`` of :func:`conv1d_transpose`.""")


conv2d_transpose = _forward_form(2, "conv2d_transpose", """
    Keras ``Conv2DTranspose`` as a function: the transposed 2D convolution of ``x``.

    Args:
        x: rank-4 array, ``(N, H, W, C)`` for ``channels_last`` or ``(N, C, H, W)`` for
            ``channels_first``; any array-API array (NumPy, torch, JAX, CuPy, array-api-strict).
            A Dask array gives a lazy Dask result, one task per batch chunk; an input chunked
            along other axes too is first rechunked to whole images (along the batch only).
        kernel: ``(kernel_h, kernel_w, filters // groups, in_channels)``, Keras' layout.
        bias: ``(filters,)`` or None.
        strides, dilation_rate: int or 2-tuple of positive ints. Unlike Keras, dilation may be
            combined with a stride > 1.
        padding: ``"valid"`` or ``"same"``, case-insensitive, as Keras (``"same"`` splits as
            TensorFlow); or numeric, the rows and columns cropped off the full output ``(H - 1)
            * stride + dilation * (kernel_h - 1) + 1`` (and likewise along the width): an int
            or ``(ph, pw)``, cropped from both sides as torch's ``padding``, or explicit
            ``((top, bottom), (left, right))`` as ``tf.nn.conv2d_transpose`` takes it (JAX's
            ``lax.conv_transpose`` pair ``(lo, hi)`` pads instead: it is the crop ``(k_eff - 1
            - lo, k_eff - 1 - hi)``, ``k_eff = dilation * (kernel - 1) + 1``).
        output_padding: None, or int / 2-tuple of ints ``>= 0``, rows/columns added at the
            bottom/right: lower than the stride with ``"valid"``/``"same"`` (Keras' rule, None
            being Keras' default size), lower than ``max(stride, dilation)`` with numeric
            padding (torch's rule, None meaning 0).
        data_format: ``"channels_last"``, ``"channels_first"``, or None for Keras' configured
            ``image_data_format`` (``$KERAS_HOME/keras.json``, else ``channels_last``).
        groups: int dividing the input channels (channel group ``g`` of ``x`` feeds filter group
            ``g``), as in PyTorch.
        backend: ``"auto"``, ``"cpu"`` or ``"triton"``.
        output_shape: None, or the output's ``(H, W)`` as ``tf.nn.conv2d_transpose`` takes it:
            any size whose forward convolution gives back the input's size (``"same"``: ``(H -
            1) * stride + 1`` to ``H * stride``; otherwise the smallest output and the ``stride
            - 1`` sizes above it), extra rows at the bottom/right. Not with ``output_padding``.

    Returns:
        The output, of the caller's namespace, device and dtype (half precision accumulates in
        float32), shape ``conv2d_transpose_output_shape(...)``.

    Raises:
        TypeError / ValueError naming the argument and the rule, before any compute.
    """)


conv2d_transpose_backward = _backward_form(2, "conv2d_transpose_backward", """
    Gradients of :func:`conv2d_transpose` for an upstream gradient ``dy``.

    Takes the forward's arguments (no bias: its gradient does not depend on it) and returns
    ``(dx, dkernel, dbias)``, shaped like ``x``, ``kernel`` and ``(filters,)``; ``dbias`` is
    ``dy`` summed over batch and space and is always returned.
    """)


conv3d_transpose = _forward_form(3, "conv3d_transpose", """
    Keras ``Conv3DTranspose`` as a function: :func:`conv_transpose` for a rank-5 ``x``
    ``(N, D, H, W, C)`` / ``(N, C, D, H, W)`` and a kernel ``(kernel_d, kernel_h, kernel_w,
    filters // groups, in_channels)``.""")


conv3d_transpose_backward = _backward_form(3, "conv3d_transpose_backward", """
    Gradients ``(dx, dkernel, dbias)`` of :func:`conv3d_transpose`.""")
