"""The spec: a transposed convolution's options met with its input and kernel shapes, and all
the shape arithmetic, in one place.

A transposed convolution is fully described by a :class:`ConvTransposeSpec`: its normalized
options (``_options``) and the geometry they give for one input shape. It is built once per
call, before any compute; every route and backend (framework routes, CPU path, Triton kernels)
reads options and geometry from it and never re-derives them. The same shape function serves the
op, the layers and ``conv2d_transpose_output_shape``.

Geometry, in Keras' terms (``keras.src.utils.conv_utils.deconv_output_length`` and TensorFlow's
``conv2d_transpose`` placement). Per spatial axis, with input length ``L``, kernel size ``k``,
stride ``s``, dilation ``d`` and effective kernel size ``k_eff = k + (k - 1) * (d - 1)``:

- output length ``O``: ``valid`` -> ``L*s + max(k_eff - s, 0)``; ``same`` -> ``L*s``; with an
  ``output_padding`` ``op`` -> ``(L - 1)*s + k_eff - 2*pad + op``, ``pad = k_eff // 2`` for
  ``same`` and 0 for ``valid``;
- placement: input pixel ``i`` and kernel tap ``t`` land on output ``i*s + t*d - pad_before``,
  ``pad_before = max(0, (L - 1)*s + k_eff - O) // 2``; what falls outside ``[0, O)`` is dropped.

Numeric padding (torch's, and the explicit padding of ``tf.nn``) crops ``(before,
after)`` off the full scatter ``F = (L - 1)*s + k_eff``: ``O = F - before - after + op`` (``op``
from 0, below ``max(s, d)``, rows added at the end, as torch), ``pad_before = before``.

``output_shape`` (``tf.nn.conv2d_transpose``'s) gives ``O`` itself, among the sizes whose forward
convolution gives back ``L``: ``same`` -> ``(L - 1)*s + 1 .. L*s``; ``valid`` -> ``F .. F + s -
1``; numeric -> ``F - before - after`` and the ``s - 1`` sizes above; placement as above.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._options import ConvTransposeOptions, positive_int, standardize_tuple, validate_options

SPATIAL_NAMES = {1: "W", 2: "H, W", 3: "D, H, W"}


def effective_kernel_size(kernel_size: int, dilation: int) -> int:
    return kernel_size + (kernel_size - 1) * (dilation - 1)


def output_length(length: int, kernel_size: int, stride: int, dilation: int, padding: str,
                  output_padding: int | None) -> int:
    """Keras' ``deconv_output_length`` for one spatial axis."""
    k_eff = effective_kernel_size(kernel_size, dilation)
    if output_padding is None:
        if padding == "valid":
            return length * stride + max(k_eff - stride, 0)
        return length * stride
    pad = k_eff // 2 if padding == "same" else 0
    return (length - 1) * stride + k_eff - 2 * pad + output_padding


def _admitted_sizes(length: int, stride: int, full: int, padding) -> tuple[int, int]:
    """The output lengths whose forward convolution gives back ``length`` (TF's check)."""
    if padding == "same":
        return (length - 1) * stride + 1, length * stride
    smallest = full if padding == "valid" else full - sum(padding)
    return smallest, smallest + stride - 1


def _axis_geometry(options: ConvTransposeOptions, axis: int, length: int, kernel_size: int):
    """``(output length, pad_before)`` along one spatial axis."""
    stride, dilation = options.strides[axis], options.dilation_rate[axis]
    padding = options.padding if isinstance(options.padding, str) else options.padding[axis]
    output_padding = options.output_padding[axis] if options.output_padding else None
    full = (length - 1) * stride + effective_kernel_size(kernel_size, dilation)
    if not isinstance(padding, str) and full - sum(padding) < 1:
        raise ValueError(
            f"padding {padding} along spatial axis {axis} crops {sum(padding)} of a full output "
            f"of length {full} (input {length}, kernel {kernel_size}, stride {stride}, dilation "
            f"{dilation}): it must leave at least 1")
    if options.output_shape is not None:
        out = options.output_shape[axis]
        low, high = _admitted_sizes(length, stride, full, padding)
        if not low <= out <= high:
            raise ValueError(
                f"output_shape must be between {low} and {high} along spatial axis {axis} (the "
                f"sizes whose convolution gives back the input's {length} with kernel "
                f"{kernel_size}, stride {stride}, dilation {dilation}, padding {padding!r}), got "
                f"{options.output_shape}")
    elif isinstance(padding, str):
        out = output_length(length, kernel_size, stride, dilation, padding, output_padding)
    else:
        out = full - sum(padding) + (output_padding or 0)
    # 'valid'/'same': TF shifts the scatter up/left by half the overhang, rounded down.
    before = max(0, full - out) // 2 if isinstance(padding, str) else padding[0]
    return out, before


def geometry(options: ConvTransposeOptions, kernel_size, in_spatial) -> tuple[tuple, tuple]:
    """``(out_spatial, pad_before)`` for an input of spatial sizes ``in_spatial``; refuses an
    output with no pixels, a crop that leaves none, an output_shape the geometry does not
    admit."""
    axes = [_axis_geometry(options, axis, length, k)
            for axis, (length, k) in enumerate(zip(in_spatial, kernel_size))]
    out_spatial = tuple(out for out, _ in axes)
    if min(out_spatial) < 1:
        raise ValueError(f"the output would have no pixels (spatial shape {out_spatial})")
    return out_spatial, tuple(before for _, before in axes)


def output_spatial_shape(options: ConvTransposeOptions, kernel_size, in_spatial) -> tuple:
    """The output's spatial sizes for an input of spatial sizes ``in_spatial``."""
    return geometry(options, kernel_size, in_spatial)[0]


def _channels_axis(data_format: str, rank: int) -> int:
    return rank + 1 if data_format == "channels_last" else 1


def _spatial_axes(data_format: str, rank: int) -> slice:
    return slice(1, rank + 1) if data_format == "channels_last" else slice(2, rank + 2)


def _layout(data_format: str, batch, spatial: tuple, channels) -> tuple:
    if data_format == "channels_first":
        return (batch, channels, *spatial)
    return (batch, *spatial, channels)


@dataclass(frozen=True)
class ConvTransposeSpec:
    """A validated transposed convolution: its options and the geometry they give for one input
    shape. Spatial tuples have one entry per spatial axis; shapes follow ``data_format``."""

    options: ConvTransposeOptions
    kernel_size: tuple[int, ...]
    batch: int
    in_spatial: tuple[int, ...]
    in_channels: int
    filters: int
    out_spatial: tuple[int, ...]
    pad_before: tuple[int, ...]

    # The options, read through the spec.
    rank = property(lambda self: self.options.rank)
    strides = property(lambda self: self.options.strides)
    padding = property(lambda self: self.options.padding)
    output_padding = property(lambda self: self.options.output_padding)
    data_format = property(lambda self: self.options.data_format)
    dilation_rate = property(lambda self: self.options.dilation_rate)
    groups = property(lambda self: self.options.groups)
    backend = property(lambda self: self.options.backend)

    # The 2-D names the backends read (rank 2 only).
    in_height = property(lambda self: self.in_spatial[0])
    in_width = property(lambda self: self.in_spatial[1])
    kernel_height = property(lambda self: self.kernel_size[0])
    kernel_width = property(lambda self: self.kernel_size[1])
    out_height = property(lambda self: self.out_spatial[0])
    out_width = property(lambda self: self.out_spatial[1])
    pad_top = property(lambda self: self.pad_before[0])
    pad_left = property(lambda self: self.pad_before[1])

    @property
    def channels_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def filters_per_group(self) -> int:
        return self.filters // self.groups

    @property
    def input_shape(self) -> tuple:
        return _layout(self.data_format, self.batch, self.in_spatial, self.in_channels)

    @property
    def output_shape(self) -> tuple:
        return _layout(self.data_format, self.batch, self.out_spatial, self.filters)

    @property
    def kernel_shape(self) -> tuple:
        return (*self.kernel_size, self.filters_per_group, self.in_channels)

    @property
    def flops(self) -> int:
        """Multiply-adds x 2 of the forward, structural zeros not counted."""
        flops = 2 * self.batch * self.in_channels * self.filters_per_group
        for length, k in zip(self.in_spatial, self.kernel_size):
            flops *= length * k
        return flops


def _check_shape(shape, name: str, rank: int, what: str) -> tuple:
    shape = tuple(shape)
    if len(shape) != rank:
        raise ValueError(f"{name} must have rank {rank} ({what}), got shape {shape}")
    if any(dim is None for dim in shape):
        raise ValueError(f"{name} must have a fully known shape, got {shape}")
    return shape


def spec_for(options: ConvTransposeOptions, input_shape, kernel_shape) -> ConvTransposeSpec:
    """Meet validated options with the input's and the Keras-layout kernel's shapes."""
    rank, data_format = options.rank, options.data_format
    spatial = SPATIAL_NAMES[rank]
    input_shape = _check_shape(input_shape, "x", rank + 2, f"N, {spatial}, C" if data_format ==
                               "channels_last" else f"N, C, {spatial}")
    kernel_shape = _check_shape(kernel_shape, "kernel", rank + 2,
                                f"{spatial} of the kernel, filters // groups, in_channels")
    in_spatial = input_shape[_spatial_axes(data_format, rank)]
    in_channels = input_shape[_channels_axis(data_format, rank)]
    *kernel_size, filters_per_group, kernel_in_channels = kernel_shape
    if min(in_spatial) < 1:
        raise ValueError(f"x must have a nonzero spatial size, got shape {input_shape}")
    if in_channels < 1 or min(kernel_shape) < 1:
        raise ValueError(
            f"x channels and every kernel dimension must be nonzero, got x {input_shape}, "
            f"kernel {kernel_shape}"
        )
    if kernel_in_channels != in_channels:
        raise ValueError(
            f"kernel's last axis (in_channels) must equal x's channel count: kernel shape "
            f"{kernel_shape} vs {in_channels} channels in x of shape {input_shape} ({data_format})"
        )
    if in_channels % options.groups:
        raise ValueError(
            f"groups must be a positive int dividing the input channels ({in_channels}), "
            f"got {options.groups!r}"
        )
    kernel_size = tuple(kernel_size)
    out_spatial, before = geometry(options, kernel_size, in_spatial)
    return ConvTransposeSpec(
        options=options, kernel_size=kernel_size, batch=input_shape[0], in_spatial=in_spatial,
        in_channels=in_channels, filters=filters_per_group * options.groups,
        out_spatial=out_spatial, pad_before=before,
    )


def make_spec(input_shape, kernel_shape, *, strides=1, padding="valid", output_padding=None,
              data_format=None, dilation_rate=1, groups=1, backend="auto",
              output_shape=None) -> ConvTransposeSpec:
    """Validate the options against the input shape and the Keras-layout kernel shape
    ``(*kernel_size, filters // groups, in_channels)``; the rank comes from the kernel."""
    kernel_shape = tuple(kernel_shape)
    if len(kernel_shape) not in (3, 4, 5):
        raise ValueError(f"kernel must have rank 3, 4 or 5 (spatial sizes, filters // groups, "
                         f"in_channels), got shape {kernel_shape}")
    options = validate_options(len(kernel_shape) - 2, strides=strides,
                               padding=padding, output_padding=output_padding,
                               data_format=data_format, dilation_rate=dilation_rate,
                               groups=groups, backend=backend, output_shape=output_shape)
    return spec_for(options, input_shape, kernel_shape)


def compute_output_shape(options: ConvTransposeOptions, kernel_size, input_shape,
                         filters) -> tuple:
    """Keras' ``compute_output_shape``: ``input_shape`` in ``options.data_format`` order, its
    batch entry kept as is (None allowed), its spatial sizes known."""
    rank = options.rank
    input_shape = tuple(input_shape)
    if len(input_shape) != rank + 2:
        raise ValueError(f"input_shape must have rank {rank + 2}, got {input_shape}")
    in_spatial = input_shape[_spatial_axes(options.data_format, rank)]
    if any(dim is None for dim in in_spatial) or min(in_spatial) < 1:
        raise ValueError(f"input_shape must have known nonzero spatial sizes, got {input_shape}")
    out_spatial = output_spatial_shape(options, kernel_size, in_spatial)
    return _layout(options.data_format, input_shape[0], out_spatial,
                   positive_int(filters, "filters"))


def _output_shape_form(rank, name: str, doc: str):
    """The public output-shape function of rank ``rank`` (None: ``input_shape``'s length - 2),
    as ``name``: Keras' ``compute_output_shape`` with the op's options."""

    def shape_of(input_shape, kernel_size, filters, *, strides=1, padding="valid",
                 output_padding=None, data_format=None, dilation_rate=1,
                 output_shape=None) -> tuple:
        call_rank = rank
        if call_rank is None:
            if len(tuple(input_shape)) not in (3, 4, 5):
                raise ValueError(f"input_shape must have rank 3, 4 or 5 (batch, 1 to 3 spatial "
                                 f"axes, channels), got {tuple(input_shape)}")
            call_rank = len(tuple(input_shape)) - 2
        kernel_size = standardize_tuple(kernel_size, call_rank, "kernel_size", minimum=1)
        options = validate_options(call_rank, strides=strides, padding=padding,
                                   output_padding=output_padding, data_format=data_format,
                                   dilation_rate=dilation_rate, output_shape=output_shape)
        return compute_output_shape(options, kernel_size, input_shape, filters)

    shape_of.__name__ = shape_of.__qualname__ = name
    shape_of.__doc__ = doc
    return shape_of


conv_transpose_output_shape = _output_shape_form(None, "conv_transpose_output_shape", """
    The output shape of :func:`tconv.conv_transpose`, Keras' ``compute_output_shape``.

    ``input_shape`` is rank 3, 4 or 5 in ``data_format`` order (the rank of the convolution is
    its length minus 2); its batch entry may be None (kept as is). ``kernel_size`` is an int or
    one int per spatial axis.
    """)


conv1d_transpose_output_shape = _output_shape_form(1, "conv1d_transpose_output_shape", """
    The output shape of :func:`tconv.conv1d_transpose`: ``input_shape`` is rank 3.""")


conv2d_transpose_output_shape = _output_shape_form(2, "conv2d_transpose_output_shape", """
    The output shape of :func:`tconv.conv2d_transpose`, Keras' ``compute_output_shape``.

    ``input_shape`` is rank 4 in ``data_format`` order; its batch entry may be None (kept as is).
    ``kernel_size`` is an int or a 2-tuple. The options are :func:`tconv.conv2d_transpose`'s.
    """)


conv3d_transpose_output_shape = _output_shape_form(3, "conv3d_transpose_output_shape", """
    The output shape of :func:`tconv.conv3d_transpose`: ``input_shape`` is rank 5.""")
