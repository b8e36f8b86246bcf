"""The argument spec: every rule about arguments and every piece of shape arithmetic, in one place.

A transposed convolution is fully described by a :class:`ConvTransposeSpec`. It is built once per
call, before any compute, from the caller's shapes and options; every backend (CPU path, Triton
kernels) reads its geometry from it and never re-derives it.

Geometry, in Keras' terms (``keras.src.utils.conv_utils.deconv_output_length`` and TensorFlow's
``conv2d_transpose`` placement). Per spatial axis, with input length ``L``, kernel size ``k``,
stride ``s``, dilation ``d`` and effective kernel size ``k_eff = k + (k - 1) * (d - 1)``:

- output length ``O``: ``valid`` -> ``L*s + max(k_eff - s, 0)``; ``same`` -> ``L*s``; with an
  ``output_padding`` ``op`` -> ``(L - 1)*s + k_eff - 2*pad + op``, ``pad = k_eff // 2`` for
  ``same`` and 0 for ``valid``;
- placement: input pixel ``i`` and kernel tap ``t`` land on output ``i*s + t*d - pad_before``,
  ``pad_before = max(0, (L - 1)*s + k_eff - O) // 2``; what falls outside ``[0, O)`` is dropped.
"""

from __future__ import annotations

import functools
import json
import numbers
import os
from dataclasses import dataclass

PADDINGS = ("valid", "same")
DATA_FORMATS = ("channels_last", "channels_first")
BACKENDS = ("auto", "cpu", "triton")


def _pair(value, name: str, *, minimum: int) -> tuple[int, int]:
    """An int or a 2-sequence of ints, each >= minimum; bools and floats are refused."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items
    ):
        raise TypeError(f"{name} must be an int or a tuple of 2 ints, got {value!r}")
    if any(v < minimum for v in items):
        rule = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return int(items[0]), int(items[1])


def normalize_padding(padding) -> str:
    if not isinstance(padding, str):
        raise TypeError(f"padding must be the string 'valid' or 'same', got {padding!r}")
    lowered = padding.lower()
    if lowered not in PADDINGS:
        raise ValueError(f"padding must be 'valid' or 'same' (case-insensitive), got {padding!r}")
    return lowered


def keras_image_data_format() -> str:
    """Keras' default ``image_data_format``: from ``$KERAS_HOME/keras.json`` (else
    ``~/.keras/keras.json``) when that file exists and names one, else ``channels_last``.
    Like Keras, each file is read once per process."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return _configured_image_data_format(os.path.join(keras_home, "keras.json"))


@functools.cache
def _configured_image_data_format(path: str) -> str:
    try:
        with open(path) as f:
            configured = json.load(f).get("image_data_format", "channels_last")
    except (OSError, ValueError, AttributeError):
        return "channels_last"
    return configured if configured in DATA_FORMATS else "channels_last"


def normalize_data_format(data_format) -> str:
    if data_format is None:
        return keras_image_data_format()
    if not isinstance(data_format, str) or data_format.lower() not in DATA_FORMATS:
        raise ValueError(
            f"data_format must be 'channels_last', 'channels_first' or None, got {data_format!r}"
        )
    return data_format.lower()


def normalize_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


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


def pad_before(length: int, kernel_size: int, stride: int, dilation: int, out_length: int) -> int:
    """How far TensorFlow shifts the scatter up/left: half the overhang, rounded down."""
    k_eff = effective_kernel_size(kernel_size, dilation)
    return max(0, (length - 1) * stride + k_eff - out_length) // 2


@dataclass(frozen=True)
class ConvTransposeSpec:
    """A validated transposed convolution, geometry resolved. Shapes are logical (NHWC order)."""

    batch: int
    in_height: int
    in_width: int
    in_channels: int
    filters: int
    kernel_height: int
    kernel_width: int
    strides: tuple[int, int]
    dilation_rate: tuple[int, int]
    groups: int
    padding: str
    data_format: str
    out_height: int
    out_width: int
    pad_top: int
    pad_left: int

    @property
    def channels_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def filters_per_group(self) -> int:
        return self.filters // self.groups

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self._layout(self.in_height, self.in_width, self.in_channels)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return self._layout(self.out_height, self.out_width, self.filters)

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        return (self.kernel_height, self.kernel_width, self.filters_per_group, self.in_channels)

    @property
    def flops(self) -> int:
        """Multiply-adds x 2 of the forward, structural zeros not counted."""
        return (2 * self.batch * self.in_height * self.in_width * self.in_channels
                * self.filters_per_group * self.kernel_height * self.kernel_width)

    def _layout(self, height: int, width: int, channels: int) -> tuple[int, int, int, int]:
        if self.data_format == "channels_first":
            return (self.batch, channels, height, width)
        return (self.batch, height, width, channels)


def _check_shape(shape, name: str, rank: int, what: str) -> tuple[int, ...]:
    shape = tuple(shape)
    if len(shape) != rank:
        raise ValueError(f"{name} must have rank {rank} ({what}), got shape {shape}")
    if any(dim is None for dim in shape):
        raise ValueError(f"{name} must have a fully known shape, got {shape}")
    return tuple(int(dim) for dim in shape)


def _geometry(in_hw, kernel_hw, strides, padding, output_padding, dilation_rate):
    strides = _pair(strides, "strides", minimum=1)
    dilation_rate = _pair(dilation_rate, "dilation_rate", minimum=1)
    padding = normalize_padding(padding)
    if output_padding is None:
        out_pad = (None, None)
    else:
        out_pad = _pair(output_padding, "output_padding", minimum=0)
        for axis, (op, s) in enumerate(zip(out_pad, strides)):
            if op >= s:
                raise ValueError(
                    f"output_padding must be lower than strides along each axis, got "
                    f"output_padding={out_pad} with strides={strides} (axis {axis})"
                )
    out_hw = tuple(
        output_length(in_hw[a], kernel_hw[a], strides[a], dilation_rate[a], padding, out_pad[a])
        for a in range(2)
    )
    if min(out_hw) < 1:
        raise ValueError(f"the output would have no pixels (spatial shape {out_hw})")
    return strides, dilation_rate, padding, out_hw


def make_spec(input_shape, kernel_shape, *, strides=1, padding="valid", output_padding=None,
              data_format=None, dilation_rate=1, groups=1) -> ConvTransposeSpec:
    """Validate the options against the input shape and the Keras-layout kernel shape."""
    data_format = normalize_data_format(data_format)
    input_shape = _check_shape(input_shape, "x", 4, "N, H, W, C" if data_format ==
                               "channels_last" else "N, C, H, W")
    kernel_shape = _check_shape(kernel_shape, "kernel", 4,
                                "kernel_h, kernel_w, filters // groups, in_channels")
    if data_format == "channels_last":
        batch, in_h, in_w, in_channels = input_shape
    else:
        batch, in_channels, in_h, in_w = input_shape
    kh, kw, filters_per_group, kernel_in_channels = kernel_shape
    if in_h < 1 or in_w < 1:
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
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool):
        raise TypeError(f"groups must be a positive int, got {groups!r}")
    if groups < 1 or in_channels % groups:
        raise ValueError(
            f"groups must be a positive int dividing the input channels ({in_channels}), "
            f"got {groups!r}"
        )
    strides, dilation_rate, padding, (out_h, out_w) = _geometry(
        (in_h, in_w), (kh, kw), strides, padding, output_padding, dilation_rate)
    return ConvTransposeSpec(
        batch=batch, in_height=in_h, in_width=in_w, in_channels=in_channels,
        filters=filters_per_group * int(groups), kernel_height=kh, kernel_width=kw,
        strides=strides, dilation_rate=dilation_rate, groups=int(groups), padding=padding,
        data_format=data_format, out_height=out_h, out_width=out_w,
        pad_top=pad_before(in_h, kh, strides[0], dilation_rate[0], out_h),
        pad_left=pad_before(in_w, kw, strides[1], dilation_rate[1], out_w),
    )


def conv2d_transpose_output_shape(input_shape, kernel_size, filters, *, strides=1,
                                  padding="valid", output_padding=None, data_format=None,
                                  dilation_rate=1) -> tuple:
    """The output shape of :func:`tconv.conv2d_transpose`, Keras' ``compute_output_shape``.

    ``input_shape`` is rank 4 in ``data_format`` order; its batch entry may be None (kept as is).
    ``kernel_size`` is an int or a 2-tuple.
    """
    data_format = normalize_data_format(data_format)
    input_shape = tuple(input_shape)
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must have rank 4, got {input_shape}")
    batch = input_shape[0]
    in_hw = input_shape[1:3] if data_format == "channels_last" else input_shape[2:4]
    if any(dim is None for dim in in_hw) or min(in_hw) < 1:
        raise ValueError(f"input_shape must have known nonzero spatial sizes, got {input_shape}")
    kernel_hw = _pair(kernel_size, "kernel_size", minimum=1)
    if not isinstance(filters, numbers.Integral) or isinstance(filters, bool) or filters < 1:
        raise ValueError(f"filters must be a positive int, got {filters!r}")
    _, _, _, (out_h, out_w) = _geometry(in_hw, kernel_hw, strides, padding, output_padding,
                                        dilation_rate)
    if data_format == "channels_last":
        return (batch, out_h, out_w, int(filters))
    return (batch, int(filters), out_h, out_w)
