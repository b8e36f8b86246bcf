"""The GPU benchmark's cases: tconv's Triton kernels against torch's cuDNN transposed conv.

Shared by ``test_bench_triton.py`` (pytest-benchmark) and ``tools/gpu_job.py`` (the report).
The layers are the seed tutorials' (DCGAN generator, CVAE decoder, pix2pix / U-Net upsampling
stacks) at a training batch, a HiFi-GAN generator's four 1-D upsampling layers and a 3-D U-Net's
upsampling layers (:class:`Layer`, any rank). Both sides get channels-last memory (torch:
channels_last / channels_last_3d tensors; at rank 1 torch its own (N, C, L)), cuDNN runs
with ``cudnn.benchmark=True``, and TF32 is matched: ``float32-tf32`` lets both use it,
``float32-ieee`` neither. Each pass is alone: forward, dgrad (d input) and wgrad (d kernel;
tconv's includes d bias). tconv's passes call the backend and the kernels directly, so they time
the launchers and kernels, not the front end.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch

from tconv import _triton, kernels, make_spec

class Layer(NamedTuple):
    """A benchmark layer of any rank: the same kernel size and stride along every spatial axis
    (``spatial`` gives the rank), channels-last input of ``in_channels``."""

    batch: int
    spatial: tuple[int, ...]
    in_channels: int
    filters: int
    kernel: int
    stride: int
    padding: str

    @property
    def rank(self) -> int:
        return len(self.spatial)


LAYERS = {
    "dcgan-7x7x256-k5s1": Layer(256, (7, 7), 256, 128, 5, 1, "same"),
    "dcgan-7x7x128-k5s2": Layer(256, (7, 7), 128, 64, 5, 2, "same"),
    "dcgan-14x14x64-k5s2": Layer(256, (14, 14), 64, 1, 5, 2, "same"),
    "cvae-7x7x64-k3s2": Layer(128, (7, 7), 64, 64, 3, 2, "same"),
    "cvae-14x14x64-k3s2": Layer(128, (14, 14), 64, 32, 3, 2, "same"),
    "pix2pix-16x16x1024-k4s2": Layer(64, (16, 16), 1024, 256, 4, 2, "same"),
    "pix2pix-64x64x256-k4s2": Layer(64, (64, 64), 256, 64, 4, 2, "same"),
    "unet-32x32x256-k3s2": Layer(64, (32, 32), 256, 128, 3, 2, "same"),
    # HiFi-GAN generator's upsampling (batch 16, 8192 samples out)
    "hifigan-up1-32x512-k16s8": Layer(16, (32,), 512, 256, 16, 8, "same"),
    "hifigan-up2-256x256-k16s8": Layer(16, (256,), 256, 128, 16, 8, "same"),
    "hifigan-up3-2048x128-k4s2": Layer(16, (2048,), 128, 64, 4, 2, "same"),
    "hifigan-up4-4096x64-k4s2": Layer(16, (4096,), 64, 32, 4, 2, "same"),
    # 3-D U-Net upsampling, 64^3 -> 128^3 at 32 channels
    "unet3d-64^3x32-k2s2": Layer(2, (64, 64, 64), 32, 32, 2, 2, "valid"),
    "unet3d-64^3x32-k3s2": Layer(2, (64, 64, 64), 32, 32, 3, 2, "same"),
}
# The rehearsal's (TRITON_INTERPRET=1, CPU, one program at a time): as small as runs every path,
# one layer per rank.
TINY_LAYERS = {
    "tiny-2x2x16-k3s2": Layer(1, (2, 2), 16, 16, 3, 2, "same"),  # odd crop: Keras != torch
    "tiny-3x16-k4s2": Layer(1, (3,), 16, 16, 4, 2, "same"),
    "tiny-2x2x2x16-k2s2": Layer(1, (2, 2, 2), 16, 16, 2, 2, "valid"),
}
# precision name (as tconv._roofline names them) -> operand dtype, TF32 allowed
PRECISIONS = {
    "float16": (torch.float16, False),
    "bfloat16": (torch.bfloat16, False),
    "float32-tf32": (torch.float32, True),
    "float32-ieee": (torch.float32, False),
}
PASSES = ("forward", "dgrad", "wgrad")
IMPLEMENTATIONS = ("tconv_triton", "torch_cudnn")


@contextlib.contextmanager
def torch_settings(precision: str):
    """cuDNN autotuning on, TF32 for both torch's matmuls and cuDNN as ``precision`` says (tconv's
    launchers read ``torch.backends.cuda.matmul.allow_tf32``)."""
    tf32 = PRECISIONS[precision][1]
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = saved


def torch_padding(kernel: int, stride: int, padding: str) -> tuple[int, int]:
    """torch's padding / output_padding giving the Keras output size ('same': L*stride,
    'valid': L*stride + max(kernel - stride, 0)), for timing: the same work as Keras' layer.
    Where 'same' crops an odd number of pixels, Keras crops the extra one at the end and torch
    at the start, so torch's output is Keras' shifted by a pixel: :func:`relative_error`
    compares with :func:`reference` instead."""
    if padding == "valid":
        return 0, max(stride - kernel, 0)
    overhang = kernel - stride
    torch_pad = (overhang + 1) // 2
    return torch_pad, 2 * torch_pad - overhang


def inputs(layer: Layer, precision: str, device: str):
    """(spec, x, kernel, bias, dy) for ``layer`` (a value of LAYERS), random normal,
    channels-last."""
    dtype = PRECISIONS[precision][0]
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(layer.batch, *layer.spatial, layer.in_channels, device=device,
                    generator=gen).to(dtype)
    fan_in = layer.kernel ** layer.rank * layer.in_channels
    kernel = (torch.randn(*(layer.kernel,) * layer.rank, layer.filters, layer.in_channels,
                          device=device, generator=gen) / fan_in ** 0.5).to(dtype)
    bias = torch.randn(layer.filters, device=device, generator=gen).to(dtype)
    spec = make_spec(x.shape, kernel.shape, strides=layer.stride, padding=layer.padding,
                     data_format="channels_last")
    dy = torch.randn(spec.output_shape, device=device, generator=gen).to(dtype)
    return spec, x, kernel, bias, dy


def tconv_pass(pass_name, spec, x, kernel, bias, dy):
    """A callable running one pass through tconv's Triton backend and kernels."""
    return {
        "forward": lambda: _triton.conv2d_transpose(x, kernel, bias, spec),
        "dgrad": lambda: kernels.dgrad(dy, kernel, spec),
        "wgrad": lambda: (kernels.wgrad(dy, x, spec), kernels.bias_grad(dy, spec)),
    }[pass_name]


def _channels_first(tensor: torch.Tensor) -> torch.Tensor:
    """The channels-first view of a channels-last tensor (torch's channels_last(_3d) memory)."""
    return tensor.movedim(-1, 1)


def cudnn_pass(pass_name, spec, x, kernel, bias, dy):
    """The same pass through torch (cuDNN on CUDA), results in torch's layout. Ranks 2 and 3 get
    channels-last memory (torch's channels_last / channels_last_3d tensors); rank 1 torch's own
    contiguous (N, C, L), copied here, outside the timed call."""
    rank, stride, kernel_size = spec.rank, spec.strides[0], spec.kernel_size[0]
    torch_pad, output_padding = torch_padding(kernel_size, stride, spec.padding)
    x_cf, dy_cf = _channels_first(x), _channels_first(dy)
    weight = kernel.permute(rank + 1, rank, *range(rank))  # (in, filters, *kernel_size)
    if rank == 1:
        x_cf, dy_cf, weight = x_cf.contiguous(), dy_cf.contiguous(), weight.contiguous()
    else:
        weight = _channels_first(weight.movedim(1, -1).contiguous())
    conv = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
            3: torch.nn.functional.conv_transpose3d}[rank]
    if pass_name == "forward":
        return lambda: conv(x_cf, weight, bias, stride=stride, padding=torch_pad,
                            output_padding=output_padding)
    output_mask = [True, False, False] if pass_name == "dgrad" else [False, True, True]
    return lambda: torch.ops.aten.convolution_backward(
        dy_cf, x_cf, weight, [spec.filters], [stride] * rank, [torch_pad] * rank, [1] * rank,
        True, [output_padding] * rank, 1, output_mask)


def chosen_config(pass_name: str) -> str:
    """The autotuner's choice for the pass's GEMM kernel in its last run (tile, stages, warps)."""
    from tconv.kernels import _autotune, _backward, _forward

    kernel = {"forward": _forward._forward_kernel, "dgrad": _backward._dgrad_kernel,
              "wgrad": _backward._wgrad_kernel}[pass_name]
    return _autotune.config_name(kernel.best_config)


def pass_callable(implementation: str, pass_name: str, case: tuple):
    return {"tconv_triton": tconv_pass, "torch_cudnn": cudnn_pass}[implementation](pass_name,
                                                                                   *case)


def reference(pass_name: str, case: tuple) -> torch.Tensor:
    """The pass's main result (y, dx or dkernel) in float64 from the case's own inputs, in tconv's
    layout: torch's uncropped transposed conv, cropped as Keras crops (``spec.pad_before``), its
    gradients by autograd."""
    spec, x, kernel, bias, dy = case
    rank, stride, kernel_size = spec.rank, spec.strides[0], spec.kernel_size[0]
    conv = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
            3: torch.nn.functional.conv_transpose3d}[rank]
    x64 = _channels_first(x).double().requires_grad_(True)
    weight = kernel.double().permute(rank + 1, rank, *range(rank)).requires_grad_(True)
    full = conv(x64, weight, bias.double(), stride=stride,
                output_padding=max(stride - kernel_size, 0))
    y = full[(..., *(slice(before, before + size)
                     for before, size in zip(spec.pad_before, spec.out_spatial)))]
    if pass_name == "forward":
        return y.movedim(1, -1)
    y.backward(_channels_first(dy).double())
    if pass_name == "dgrad":
        return x64.grad.movedim(1, -1)
    return weight.grad.permute(*range(2, rank + 2), 1, 0)  # Keras' (*k, filters, in_channels)


def relative_error(pass_name: str, case: tuple) -> float:
    """||tconv - reference|| / ||reference|| of the pass's main result (:func:`reference`)."""
    ours = tconv_pass(pass_name, *case)()
    if pass_name == "wgrad":
        ours = ours[0]
    expected = reference(pass_name, case)
    return float(torch.linalg.vector_norm(ours.double() - expected)
                 / torch.linalg.vector_norm(expected))
