"""Ranks 1 and 3 on the Triton backend against the float64 reference, forward and gradients.

Rank 1 runs the 2-D kernels on a unit-height view, rank 3 one 2-D launch per depth tap with
depth folded into the batch (``tconv._ranks``). Without CUDA the kernels run in Triton's
interpreter on CPU tensors, chosen here at collection before triton is imported, as
tests/test_triton.py does; the shapes are tiny for it.
"""


import numpy as np
import pytest

from helpers import triton_device

DEVICE = triton_device()  # at collection: TRITON_INTERPRET set before triton is imported
torch = pytest.importorskip("torch", reason="torch is not installed")
triton = pytest.importorskip("triton", reason="triton is not installed")
CUDA = DEVICE == "cuda"

import reference  # noqa: E402  (tests/, on sys.path through conftest)

import tconv  # noqa: E402

# (x shape channels-last, kernel size, filters, options)
CASES = {
    "1d-s2-same-cf": ((2, 5, 3), (4,), 3, dict(strides=2, padding="same",
                                               data_format="channels_first")),
    "1d-d2-op-g2": ((1, 4, 4), (3,), 2, dict(dilation_rate=2, output_padding=0, groups=2)),
    "3d-s2-k2": ((1, 2, 3, 2, 3), (2, 2, 2), 4, dict(strides=2)),
    "3d-s212-same-op-cf": ((2, 3, 2, 2, 2), (3, 2, 3), 3, dict(
        strides=(2, 1, 2), padding="same", output_padding=(1, 0, 1),
        data_format="channels_first")),
}
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def _reference_options(options):
    return dict(strides=options.get("strides", 1), padding=options.get("padding", "valid"),
                output_padding=options.get("output_padding"),
                dilation=options.get("dilation_rate", 1), groups=options.get("groups", 1))


def _in_format(a, options):
    return np.moveaxis(a, -1, 1) if options.get("data_format") == "channels_first" else a


def _channels_last(t, options):
    a = t.detach().cpu().double().numpy()
    return np.moveaxis(a, 1, -1) if options.get("data_format") == "channels_first" else a


def _assert_close(actual, expected, dtype, what):
    tolerance = TOLERANCE[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tolerance,
                               atol=tolerance * max(1.0, float(np.abs(expected).max())),
                               err_msg=what)


@pytest.mark.parametrize("dtype", TOLERANCE, ids=str)
@pytest.mark.parametrize("case", CASES)
def test_forward_and_gradients_match_reference(case, dtype):
    x_shape, kernel_size, filters, options = CASES[case]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    kernel = rng.standard_normal((*kernel_size, filters // options.get("groups", 1),
                                  x_shape[-1]))
    bias = rng.standard_normal(filters)
    x, kernel, bias = (torch.asarray(a, dtype=dtype).double().numpy() for a in (x, kernel, bias))

    def on_device(a):
        return torch.asarray(a, dtype=dtype, device=DEVICE)

    y = tconv.conv_transpose(on_device(_in_format(x, options)), on_device(kernel),
                             on_device(bias), backend="triton", **options)
    assert y.dtype == dtype and y.device.type == DEVICE
    expected = reference.forward(x, kernel, bias, **_reference_options(options))
    _assert_close(_channels_last(y, options), expected, dtype, "y")
    dy = torch.asarray(rng.standard_normal(expected.shape), dtype=dtype).double().numpy()
    dx, dkernel, dbias = tconv.conv_transpose_backward(
        on_device(_in_format(dy, options)), on_device(_in_format(x, options)),
        on_device(kernel), backend="triton", **options)
    assert {t.dtype for t in (dx, dkernel, dbias)} == {dtype}
    ref_dx, ref_dkernel, ref_dbias = reference.backward(dy, x, kernel,
                                                        **_reference_options(options))
    _assert_close(_channels_last(dx, options), ref_dx, dtype, "dx")
    _assert_close(dkernel.cpu().double().numpy(), ref_dkernel, dtype, "dkernel")
    _assert_close(dbias.cpu().double().numpy(), ref_dbias, dtype, "dbias")
