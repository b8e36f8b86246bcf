"""GPU benchmarks (pytest-benchmark): tconv's Triton kernels against torch's cuDNN transposed conv.

The layers are the seed tutorials' (DCGAN generator, CVAE decoder, pix2pix / U-Net upsampling
stacks) at a training batch. Both sides get NHWC memory (torch: channels_last tensors), cuDNN runs
with ``cudnn.benchmark=True``, and TF32 is matched (off: IEEE float32 on both sides). Each pass is
timed alone: forward, dgrad (d input) and wgrad (d kernel; tconv's includes d bias). tconv's rows
call the backend module directly, so they time the launchers and kernels, not the front end.
``extra_info`` carries the pass's FLOPs and TFLOP/s at the median. Skips without CUDA.

    pytest benchmarks/test_bench_triton.py --benchmark-only --benchmark-group-by=group
"""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
pytest.importorskip("triton", reason="triton is not installed")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)


from tconv import _triton, make_spec  # noqa: E402

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
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
PASSES = ("forward", "dgrad", "wgrad")


def _torch_padding(kernel, stride):
    """padding / output_padding giving torch the Keras 'same' output size L*stride."""
    overhang = kernel - stride
    padding = (overhang + 1) // 2
    return padding, 2 * padding - overhang


@pytest.fixture(scope="module", autouse=True)
def _cuda_settings():
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = saved


def _inputs(layer, dtype):
    batch, height, width, channels, filters, kernel_size, stride, padding = LAYERS[layer]
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, height, width, channels, device="cuda", generator=gen).to(dtype)
    kernel = (torch.randn(kernel_size, kernel_size, filters, channels, device="cuda",
                          generator=gen) / (kernel_size * channels ** 0.5)).to(dtype)
    bias = torch.zeros(filters, device="cuda", dtype=dtype)
    spec = make_spec(x.shape, kernel.shape, strides=stride, padding=padding,
                     data_format="channels_last")
    dy = torch.randn(spec.output_shape, device="cuda", generator=gen).to(dtype)
    return spec, x, kernel, bias, dy


def _tconv_pass(pass_name, spec, x, kernel, bias, dy):
    from tconv import kernels

    return {
        "forward": lambda: _triton.conv2d_transpose(x, kernel, bias, spec),
        "dgrad": lambda: kernels.dgrad(dy, kernel, spec),
        "wgrad": lambda: (kernels.wgrad(dy, x, spec), kernels.bias_grad(dy, spec)),
    }[pass_name]


def _cudnn_pass(pass_name, spec, x, kernel, bias, dy):
    stride, kernel_size = spec.strides[0], spec.kernel_height
    padding, output_padding = _torch_padding(kernel_size, stride)
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


IMPLEMENTATIONS = {"tconv_triton": _tconv_pass, "torch_cudnn": _cudnn_pass}


@pytest.mark.parametrize("pass_name", PASSES)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", LAYERS)
def test_bench_gpu(benchmark, layer, dtype, implementation, pass_name):
    spec, *tensors = _inputs(layer, DTYPES[dtype])
    run = IMPLEMENTATIONS[implementation](pass_name, spec, *tensors)

    def timed():
        run()
        torch.cuda.synchronize()

    timed()  # autotuning / cuDNN algorithm search happen here, untimed
    benchmark.group = f"{layer} {dtype} {pass_name}"
    benchmark.extra_info.update(device=torch.cuda.get_device_name(), flops=spec.flops)
    benchmark.pedantic(timed, warmup_rounds=3, rounds=20, iterations=1)
    median_s = benchmark.stats.stats.median
    benchmark.extra_info["tflops_per_s_at_median"] = spec.flops / median_s / 1e12
