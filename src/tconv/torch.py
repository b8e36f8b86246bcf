"""``tconv.torch``: Keras' ``Conv2DTranspose`` layer as a torch ``nn.Module``, and drop-ins for
torch's own ``nn.ConvTranspose2d`` and ``nn.functional.conv_transpose2d`` on tconv's op (Triton
kernels on CUDA, the CPU path elsewhere).

Imported on first use (``import tconv.torch`` or ``tconv.torch``), never by ``import tconv``.
"""

from __future__ import annotations

import math

import torch

from ._dispatch import conv2d_transpose
from ._options import positive_int, standardize_tuple, validate_options

__all__ = ["Conv2DTranspose", "ConvTranspose2d", "conv_transpose2d"]


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
        self.kernel_size = standardize_tuple(kernel_size, 2, "kernel_size", minimum=1)
        options = validate_options(2, strides=strides, padding=padding,
                                   output_padding=output_padding, data_format=data_format,
                                   dilation_rate=dilation_rate, groups=groups,
                                   filters=filters, in_channels=in_channels)
        self.in_channels = positive_int(in_channels, "in_channels")
        self.filters = positive_int(filters, "filters")
        self.strides = options.strides
        self.padding = options.padding
        self.output_padding = options.output_padding
        self.dilation_rate = options.dilation_rate
        self.groups = options.groups
        self.data_format = options.data_format
        kernel_shape = (*self.kernel_size, self.filters // self.groups, self.in_channels)
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


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """``torch.nn.functional.conv_transpose2d``'s signature and results, on tconv's op.

    ``input`` is ``(N, C, H, W)`` or batchless ``(C, H, W)``; ``weight`` is in torch's layout
    ``(in_channels, out_channels // groups, kH, kW)``; ``padding`` (an int or ``(ph, pw)``) crops
    both sides of each axis and ``output_padding`` adds rows/columns at the bottom/right, below
    ``max(stride, dilation)``. Differentiable (twice), and ``torch.compile`` sees one node.
    """
    if input.dim() not in (3, 4):
        raise ValueError(f"input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape "
                         f"{tuple(input.shape)}")
    if weight.dim() != 4 or weight.shape[0] != input.shape[-3]:
        raise ValueError(f"weight must have shape (in_channels, out_channels // groups, kH, kW) "
                         f"with in_channels = {input.shape[-3]} (the input's channels), got "
                         f"shape {tuple(weight.shape)}")
    batched = input.dim() == 4
    # torch's weight (in, out // groups, kH, kW) is Keras' kernel (kH, kW, out // groups, in).
    y = conv2d_transpose(input if batched else input.unsqueeze(0), weight.permute(2, 3, 1, 0),
                         bias, strides=stride,
                         padding=standardize_tuple(padding, 2, "padding", minimum=0),
                         output_padding=output_padding, data_format="channels_first",
                         dilation_rate=dilation, groups=groups)
    return y if batched else y.squeeze(0)


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` whose forward runs :func:`conv_transpose2d`.

    Everything else is torch's own module: the arguments and their checks (``padding_mode``
    other than "zeros" refused), ``weight`` ``(in_channels, out_channels // groups, kH, kW)``
    and ``bias``, their initialization, the ``state_dict`` (a checkpoint of
    ``nn.ConvTranspose2d`` loads unchanged), and how ``forward(input, output_size)`` picks the
    output padding.
    """

    def forward(self, input: torch.Tensor, output_size=None) -> torch.Tensor:
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                output_padding, self.groups, self.dilation)
