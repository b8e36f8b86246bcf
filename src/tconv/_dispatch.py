"""The public operator: arrays checked, spec built, a backend chosen, the result returned in the
caller's namespace. Data flows one way: API -> spec -> dispatch -> (cpu | triton) -> result."""

from __future__ import annotations

import array_api_compat

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


def _check_arrays(xp, reference_name: str, **arrays):
    """Float dtype, all equal to the reference's, and one device."""
    reference = arrays[reference_name]
    if not xp.isdtype(reference.dtype, "real floating"):
        raise TypeError(f"{reference_name} must have a real floating dtype, got dtype "
                        f"{reference.dtype}")
    where = array_api_compat.device(reference)
    for name, array in arrays.items():
        if array is None or name == reference_name:
            continue
        if array.dtype != reference.dtype:
            raise TypeError(f"{name} must have the dtype of {reference_name} ({reference.dtype}), "
                            f"got dtype {array.dtype}: tconv does not mix float dtypes")
        if array_api_compat.device(array) != where:
            raise ValueError(f"{name} must be on the device of {reference_name} ({where}), "
                             f"got {array_api_compat.device(array)}")


def _framework_route(x):
    """The route module for arrays that need more than the array API, else the backend module.

    torch tensors go through a ``torch.library`` custom op (autograd, ``torch.compile``), Dask
    arrays through one task per batch chunk, CuPy and eager JAX GPU arrays through zero-copy torch
    views onto the GPU backend. Routes and backends share one signature, ``conv2d_transpose(x,
    kernel, bias, spec)`` and ``conv2d_transpose_backward(dy, x, kernel, spec)``, and a route is
    imported only when the caller's arrays come from its framework.
    """
    if array_api_compat.is_torch_array(x):
        from . import _torch_op

        return _torch_op
    if array_api_compat.is_dask_array(x):
        from . import _dask

        return _dask
    return None


def _implementation(spec: ConvTransposeSpec, x):
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


def _spec(rank, x, kernel, strides, padding, output_padding, data_format, dilation_rate, groups,
          backend) -> ConvTransposeSpec:
    """The spec of a rank-``rank`` call; rank None is ``x``'s spatial axes (1, 2 or 3)."""
    if rank is None:
        rank = _rank_of(x)
    if len(kernel.shape) != rank + 2:
        raise ValueError(f"kernel must have rank {rank + 2} ({KERNEL_AXES[rank]}, "
                         f"filters // groups, in_channels), got shape {tuple(kernel.shape)}")
    options = validate_options(rank, strides=strides, padding=padding,
                               output_padding=output_padding, data_format=data_format,
                               dilation_rate=dilation_rate, groups=groups, backend=backend)
    return spec_for(options, x.shape, kernel.shape)


def _rank_of(x) -> int:
    """The rank of a transposed convolution taking ``x``: its spatial axes."""
    if len(x.shape) not in (3, 4, 5):
        raise ValueError(f"x must have rank 3, 4 or 5 (batch, 1 to 3 spatial axes, channels), "
                         f"got shape {tuple(x.shape)}")
    return len(x.shape) - 2


def _forward(rank, x, kernel, bias, **options):
    xp = _namespace(x=x, kernel=kernel, bias=bias)
    _check_arrays(xp, "x", x=x, kernel=kernel, bias=bias)
    spec = _spec(rank, x, kernel, **options)
    if bias is not None and tuple(bias.shape) != (spec.filters,):
        raise ValueError(f"bias must have shape (filters,) = ({spec.filters},), got "
                         f"{tuple(bias.shape)}")
    return _implementation(spec, x).conv2d_transpose(x, kernel, bias, spec)


def _backward(rank, dy, x, kernel, **options):
    xp = _namespace(dy=dy, x=x, kernel=kernel)
    _check_arrays(xp, "x", x=x, kernel=kernel, dy=dy)
    spec = _spec(rank, x, kernel, **options)
    if tuple(dy.shape) != spec.output_shape:
        raise ValueError(f"dy must have the forward's output shape {spec.output_shape} "
                         f"({spec.data_format}), got {tuple(dy.shape)}")
    return _implementation(spec, x).conv2d_transpose_backward(dy, x, kernel, spec)


def conv_transpose(x, kernel, bias=None, *, strides=1, padding="valid", output_padding=None,
                   data_format=None, dilation_rate=1, groups=1, backend="auto"):
    """Keras ``Conv1DTranspose`` / ``Conv2DTranspose`` / ``Conv3DTranspose`` as one function:
    the transposed convolution of ``x`` over its 1, 2 or 3 spatial axes.

    Args:
        x: rank 3, 4 or 5 (the rank of the convolution is ``x``'s minus 2): ``(N, *spatial, C)``
            for ``channels_last`` or ``(N, C, *spatial)`` for ``channels_first``; any array-API
            array, as :func:`conv2d_transpose` takes.
        kernel: ``(*kernel_size, filters // groups, in_channels)``, Keras' layout.
        bias: ``(filters,)`` or None.
        strides, dilation_rate, output_padding: an int or one int per spatial axis.
        padding, data_format, groups, backend: as :func:`conv2d_transpose`.

    Returns:
        The output, of the caller's namespace, device and dtype, shape
        ``conv_transpose_output_shape(...)``.

    Raises:
        TypeError / ValueError naming the argument and the rule, before any compute.
    """
    return _forward(None, x, kernel, bias, strides=strides, padding=padding,
                    output_padding=output_padding, data_format=data_format,
                    dilation_rate=dilation_rate, groups=groups, backend=backend)


def conv_transpose_backward(dy, x, kernel, *, strides=1, padding="valid", output_padding=None,
                            data_format=None, dilation_rate=1, groups=1, backend="auto"):
    """Gradients ``(dx, dkernel, dbias)`` of :func:`conv_transpose` for an upstream gradient
    ``dy``, as :func:`conv2d_transpose_backward` for every rank."""
    return _backward(None, dy, x, kernel, strides=strides, padding=padding,
                     output_padding=output_padding, data_format=data_format,
                     dilation_rate=dilation_rate, groups=groups, backend=backend)


def conv1d_transpose(x, kernel, bias=None, *, strides=1, padding="valid", output_padding=None,
                     data_format=None, dilation_rate=1, groups=1, backend="auto"):
    """Keras ``Conv1DTranspose`` as a function: :func:`conv_transpose` for a rank-3 ``x``
    ``(N, W, C)`` / ``(N, C, W)`` and a kernel ``(kernel_w, filters // groups, in_channels)``."""
    return _forward(1, x, kernel, bias, strides=strides, padding=padding,
                    output_padding=output_padding, data_format=data_format,
                    dilation_rate=dilation_rate, groups=groups, backend=backend)


def conv1d_transpose_backward(dy, x, kernel, *, strides=1, padding="valid", output_padding=None,
                              data_format=None, dilation_rate=1, groups=1, backend="auto"):
    """Gradients ``(dx, dkernel, dbias)`` of :func:`conv1d_transpose`."""
    return _backward(1, dy, x, kernel, strides=strides, padding=padding,
                     output_padding=output_padding, data_format=data_format,
                     dilation_rate=dilation_rate, groups=groups, backend=backend)


def conv3d_transpose(x, kernel, bias=None, *, strides=1, padding="valid", output_padding=None,
                     data_format=None, dilation_rate=1, groups=1, backend="auto"):
    """Keras ``Conv3DTranspose`` as a function: :func:`conv_transpose` for a rank-5 ``x``
    ``(N, D, H, W, C)`` / ``(N, C, D, H, W)`` and a kernel ``(kernel_d, kernel_h, kernel_w,
    filters // groups, in_channels)``."""
    return _forward(3, x, kernel, bias, strides=strides, padding=padding,
                    output_padding=output_padding, data_format=data_format,
                    dilation_rate=dilation_rate, groups=groups, backend=backend)


def conv3d_transpose_backward(dy, x, kernel, *, strides=1, padding="valid", output_padding=None,
                              data_format=None, dilation_rate=1, groups=1, backend="auto"):
    """Gradients ``(dx, dkernel, dbias)`` of :func:`conv3d_transpose`."""
    return _backward(3, dy, x, kernel, strides=strides, padding=padding,
                     output_padding=output_padding, data_format=data_format,
                     dilation_rate=dilation_rate, groups=groups, backend=backend)


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
    return _forward(2, x, kernel, bias, strides=strides, padding=padding,
                    output_padding=output_padding, data_format=data_format,
                    dilation_rate=dilation_rate, groups=groups, backend=backend)


def conv2d_transpose_backward(dy, x, kernel, *, strides=1, padding="valid", output_padding=None,
                              data_format=None, dilation_rate=1, groups=1, backend="auto"):
    """Gradients of :func:`conv2d_transpose` for an upstream gradient ``dy``.

    Takes the forward's arguments (no bias: its gradient does not depend on it) and returns
    ``(dx, dkernel, dbias)``, shaped like ``x``, ``kernel`` and ``(filters,)``; ``dbias`` is
    ``dy`` summed over batch and space and is always returned.
    """
    return _backward(2, dy, x, kernel, strides=strides, padding=padding,
                     output_padding=output_padding, data_format=data_format,
                     dilation_rate=dilation_rate, groups=groups, backend=backend)
