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


def _spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate, groups,
          backend) -> ConvTransposeSpec:
    if len(kernel.shape) != 4:
        raise ValueError(f"kernel must have rank 4 (kernel_h, kernel_w, filters // groups, "
                         f"in_channels), got shape {tuple(kernel.shape)}")
    options = validate_options(2, strides=strides, padding=padding,
                               output_padding=output_padding, data_format=data_format,
                               dilation_rate=dilation_rate, groups=groups, backend=backend)
    return spec_for(options, x.shape, kernel.shape)


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
    xp = _namespace(x=x, kernel=kernel, bias=bias)
    _check_arrays(xp, "x", x=x, kernel=kernel, bias=bias)
    spec = _spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate, groups,
                 backend)
    if bias is not None and tuple(bias.shape) != (spec.filters,):
        raise ValueError(f"bias must have shape (filters,) = ({spec.filters},), got "
                         f"{tuple(bias.shape)}")
    return _implementation(spec, x).conv2d_transpose(x, kernel, bias, spec)


def conv2d_transpose_backward(dy, x, kernel, *, strides=1, padding="valid", output_padding=None,
                              data_format=None, dilation_rate=1, groups=1, backend="auto"):
    """Gradients of :func:`conv2d_transpose` for an upstream gradient ``dy``.

    Takes the forward's arguments (no bias: its gradient does not depend on it) and returns
    ``(dx, dkernel, dbias)``, shaped like ``x``, ``kernel`` and ``(filters,)``; ``dbias`` is
    ``dy`` summed over batch and space and is always returned.
    """
    xp = _namespace(dy=dy, x=x, kernel=kernel)
    _check_arrays(xp, "x", x=x, kernel=kernel, dy=dy)
    spec = _spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate, groups,
                 backend)
    if tuple(dy.shape) != spec.output_shape:
        raise ValueError(f"dy must have the forward's output shape {spec.output_shape} "
                         f"({spec.data_format}), got {tuple(dy.shape)}")
    return _implementation(spec, x).conv2d_transpose_backward(dy, x, kernel, spec)



