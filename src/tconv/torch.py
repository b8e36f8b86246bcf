"""``tconv.torch``: Keras' ``Conv2DTranspose`` layer as a torch ``nn.Module``.

Imported on first use (``import tconv.torch`` or ``tconv.torch``), never by ``import tconv``.
"""

from __future__ import annotations

import math
import numbers

import torch

from ._dispatch import conv2d_transpose
from ._spec import _pair, make_spec, normalize_data_format

__all__ = ["Conv2DTranspose"]


def _positive_int(value, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class Conv2DTranspose(torch.nn.Module):
    """Keras ``Conv2DTranspose`` with the parameters of its build: ``kernel`` in Keras' layout
    ``(kernel_h, kernel_w, filters // groups, in_channels)`` and ``bias`` ``(filters,)``, both
    initialized as Keras does (``glorot_uniform``, ``zeros``).

    Unlike Keras the input channel count is given up front (torch modules build eagerly), and
    ``data_format`` defaults to torch's ``channels_first``; ``None`` means Keras' configured
    ``image_data_format``. The other arguments are :func:`tconv.conv2d_transpose`'s.
    """

    def __init__(self, in_channels, filters, kernel_size, strides=1, padding="valid",
                 output_padding=None, dilation_rate=1, groups=1, use_bias=True,
                 data_format="channels_first", device=None, dtype=None):
        super().__init__()
        in_channels = _positive_int(in_channels, "in_channels")
        filters = _positive_int(filters, "filters")
        kernel_size = _pair(kernel_size, "kernel_size", minimum=1)
        groups = _positive_int(groups, "groups")
        if filters % groups:
            raise ValueError(f"groups must divide filters ({filters}), got {groups}")
        kernel_shape = (*kernel_size, filters // groups, in_channels)
        # The options' rules live in make_spec: check them now on a one-pixel input, not at the
        # first forward.
        spec = make_spec((1, 1, 1, in_channels), kernel_shape, strides=strides, padding=padding,
                         output_padding=output_padding, data_format="channels_last",
                         dilation_rate=dilation_rate, groups=groups)
        self.in_channels = in_channels
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = spec.strides
        self.padding = spec.padding
        self.output_padding = (None if output_padding is None
                               else _pair(output_padding, "output_padding", minimum=0))
        self.dilation_rate = spec.dilation_rate
        self.groups = groups
        self.data_format = normalize_data_format(data_format)
        factory = {"device": device, "dtype": dtype}
        self.kernel = torch.nn.Parameter(torch.empty(kernel_shape, **factory))
        if use_bias:
            self.bias = torch.nn.Parameter(torch.empty(filters, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras' ``glorot_uniform`` for the kernel, with Keras' fans for a conv kernel ``(...,
        fan_in axis, fan_out axis)``: ``fan_in = kh*kw*(filters // groups)``, ``fan_out =
        kh*kw*in_channels``; zeros for the bias."""
        receptive_field = self.kernel_size[0] * self.kernel_size[1]
        fan_in = receptive_field * self.kernel.shape[2]
        fan_out = receptive_field * self.kernel.shape[3]
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        with torch.no_grad():
            self.kernel.uniform_(-limit, limit)
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d_transpose(x, self.kernel, self.bias, strides=self.strides,
                                padding=self.padding, output_padding=self.output_padding,
                                data_format=self.data_format, dilation_rate=self.dilation_rate,
                                groups=self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.filters}, kernel_size={self.kernel_size}, "
                f"strides={self.strides}, padding={self.padding!r}, "
                f"output_padding={self.output_padding}, dilation_rate={self.dilation_rate}, "
                f"groups={self.groups}, use_bias={self.bias is not None}, "
                f"data_format={self.data_format!r}")
