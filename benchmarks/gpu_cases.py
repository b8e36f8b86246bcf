"""The GPU benchmark's cases: tconv's Triton kernels against torch's cuDNN transposed conv.

Shared by ``test_bench_triton.py`` (pytest-benchmark) and ``tools/gpu_job.py`` (the report).
The layers are the seed tutorials' (DCGAN generator, CVAE decoder, pix2pix / U-Net upsampling
stacks) at a training batch. Both sides get NHWC memory (torch: channels_last tensors), cuDNN runs
with ``cudnn.benchmark=True``, and TF32 is matched: ``float32-tf32`` lets both use it,
``float32-ieee`` neither. Each pass is alone: forward, dgrad (d input) and wgrad (d kernel;
tconv's includes d bias). tconv's passes call the backend and the kernels directly, so they time
the launchers and kernels, not the front end.
"""

from __future__ import annotations

import contextlib

import torch

from tconv import _triton, kernels, make_spec

# name: (batch, height, width, in_channels, filters, kernel, stride, padding)
LAYERS = {
    "dcgan-7x7x256-k5s1": (256, 7, 7, 256, 128, 5, 1, "same"),
    "dcgan-7x7x128-k5s2": (256, 7, 7, 128, 64, 5, 2, "same"),
    "dcgan-14x14x64-k5s2": (256, 14, 14, 64, 1, 5, 2, "same"),
    "cvae-7x7x64-k3s2": (128, 7, 7, 64, 64, 3, 2, "same"),
    "cvae-14x14x64-k3s2": (128, 14, 14, 64, 32, 3, 2, "same"),
    "pix2pix-16x16x1024-k4s2": (64, 16, 16, 1024, 256, 4, 2, "same"),
    "pix2pix-64x64x256-k4s2": (64, 64, 64, 256, 64, 4, 2, "same"),
    "unet-32x32x256-k3s2": (64, 32, 32, 256, 128, 3, 2, "same"),
}
# The rehearsal's (TRITON_INTERPRET=1, CPU, one program at a time): as small as runs every path.
TINY_LAYERS = {"tiny-2x2x16-k2s2": (1, 2, 2, 16, 16, 2, 2, "same")}
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


def torch_padding(kernel: int, stride: int) -> tuple[int, int]:
    """padding / output_padding giving torch the Keras 'same' output size L*stride."""
    overhang = kernel - stride
    padding = (overhang + 1) // 2
    return padding, 2 * padding - overhang


def inputs(shape: tuple, precision: str, device: str):
    """(spec, x, kernel, bias, dy) for a layer ``shape`` (a value of LAYERS), random normal."""
    batch, height, width, channels, filters, kernel_size, stride, padding = shape
    dtype = PRECISIONS[precision][0]
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, height, width, channels, device=device, generator=gen).to(dtype)
    kernel = (torch.randn(kernel_size, kernel_size, filters, channels, device=device,
                          generator=gen) / (kernel_size * channels ** 0.5)).to(dtype)
    bias = torch.randn(filters, device=device, generator=gen).to(dtype)
    spec = make_spec(x.shape, kernel.shape, strides=stride, padding=padding,
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


def cudnn_pass(pass_name, spec, x, kernel, bias, dy):
    """The same pass through torch (cuDNN on CUDA), NHWC memory, results in torch's layout."""
    stride, kernel_size = spec.strides[0], spec.kernel_height
    padding, output_padding = torch_padding(kernel_size, stride)
    # NCHW views of NHWC memory are torch's channels_last tensors
    x_cl, dy_cl = x.permute(0, 3, 1, 2), dy.permute(0, 3, 1, 2)
    weight = kernel.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
    if pass_name == "forward":
        return lambda: torch.nn.functional.conv_transpose2d(
            x_cl, weight, bias, stride=stride, padding=padding, output_padding=output_padding)
    output_mask = [True, False, False] if pass_name == "dgrad" else [False, True, True]
    return lambda: torch.ops.aten.convolution_backward(
        dy_cl, x_cl, weight, [spec.filters], [stride] * 2, [padding] * 2, [1, 1], True,
        [output_padding] * 2, 1, output_mask)


def pass_callable(implementation: str, pass_name: str, case: tuple):
    return {"tconv_triton": tconv_pass, "torch_cudnn": cudnn_pass}[implementation](pass_name,
                                                                                   *case)


def relative_error(pass_name: str, case: tuple) -> float:
    """||tconv - torch|| / ||torch|| of the pass's main result (y, dx or dkernel), in float64."""
    ours = tconv_pass(pass_name, *case)()
    theirs = cudnn_pass(pass_name, *case)()
    if pass_name == "forward":
        theirs = theirs.permute(0, 2, 3, 1)
    elif pass_name == "dgrad":
        theirs = theirs[0].permute(0, 2, 3, 1)
    else:  # torch's weight grad is (in_channels, filters, kh, kw); tconv's is Keras' layout
        ours, theirs = ours[0], theirs[1].permute(2, 3, 1, 0)
    ours, theirs = ours.double(), theirs.double()
    return float(torch.linalg.vector_norm(ours - theirs) / torch.linalg.vector_norm(theirs))
