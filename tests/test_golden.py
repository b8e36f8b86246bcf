"""tconv against the golden outputs TensorFlow/Keras computed (``tools/make_golden.py``).

Every "op", "tutorial", "tf_nn", "rank1" and "rank3" case (Conv2DTranspose, tf.nn's
conv2d_transpose with output_shape or explicit padding, Conv1DTranspose and Conv3DTranspose),
forward and the three gradients, through ``tconv.conv_transpose`` with the CPU backend on NumPy,
array-api-strict and torch; on JAX, a fixed subset under ``jax.jit``: JAX's eager ops compile
once per new shape (dozens a call, seconds a case), while jit compiles the same tconv code as one
program, in less than half the time (eager JAX is checked against tests/reference.py in
tests/test_cpu.py and tests/test_ranks.py). The Triton backend runs a fixed subset
on torch tensors: on the GPU when there is one, else through the Triton interpreter on the CPU.
"""

import functools

import numpy as np
import pytest

import tconv
from conftest import NAMESPACES
from golden_data import load_cases, manifest
from helpers import triton_device

CASES = load_cases("op") + load_cases("tutorial")
TF_NN_CASES = load_cases("tf_nn")  # tf.nn.conv2d_transpose: output_shape, explicit padding
RANK_CASES = load_cases("rank1") + load_cases("rank3")


def _evenly_spaced(cases, count):
    return cases[:: len(cases) // count][:count]


SUBSET_NAMESPACES = {"jax.numpy": _evenly_spaced(CASES, 30) + _evenly_spaced(TF_NN_CASES, 6)
                     + _evenly_spaced(RANK_CASES, 12)}
CPU_ITEMS = [(namespace, case) for namespace in NAMESPACES
             for case in SUBSET_NAMESPACES.get(namespace, CASES + TF_NN_CASES + RANK_CASES)]
TRITON_CASES = (_evenly_spaced(CASES, 12) + _evenly_spaced(TF_NN_CASES, 6)
                + _evenly_spaced(RANK_CASES, 8))


TRITON_DEVICE = triton_device()  # at collection: before triton is imported

# tconv and TensorFlow sum the same products in different orders, so they differ by rounding of
# the order of the largest value: the tolerance is relative, and absolute against max |expected|.
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


OPTIONS = ("strides", "padding", "output_padding", "output_shape", "data_format", "dilation_rate")


def _options(case):
    return {key: case.params[key] for key in OPTIONS if key in case.params}


def assert_matches(actual, expected, what):
    if hasattr(actual, "cpu"):  # a torch tensor, maybe on a GPU
        actual = actual.cpu()
    actual = np.asarray(actual)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, TF {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, TF {expected.shape}"
    tol = TOLERANCE[str(expected.dtype)]
    np.testing.assert_allclose(actual, expected, rtol=tol,
                               atol=tol * np.max(np.abs(expected), initial=1.0), err_msg=what)


def _traced(xp, function):
    """``function`` as the golden cases call it in namespace ``xp``: under ``jax.jit`` on JAX."""
    if xp is not None and xp.__name__ == "jax.numpy":
        import jax

        return jax.jit(function)
    return function


def _check_forward(asarray, case, backend, xp=None):
    a = case.arrays
    forward = functools.partial(tconv.conv_transpose, backend=backend, **_options(case))
    y = _traced(xp, forward)(asarray(a["x"]), asarray(a["kernel"]),
                             asarray(a["bias"]) if "bias" in a else None)
    assert_matches(y, a["y"], "y")


def _check_backward(asarray, case, backend, xp=None):
    a = case.arrays
    backward = functools.partial(tconv.conv_transpose_backward, backend=backend,
                                 **_options(case))
    dx, dkernel, dbias = _traced(xp, backward)(asarray(a["dy"]), asarray(a["x"]),
                                               asarray(a["kernel"]))
    assert_matches(dx, a["dx"], "dx")
    assert_matches(dkernel, a["dkernel"], "dkernel")
    if "dbias" in a:  # TF has a bias gradient only for layers with a bias
        assert_matches(dbias, a["dbias"], "dbias")


@pytest.mark.parametrize("xp, case", CPU_ITEMS, indirect=["xp"], ids=str)
def test_forward_cpu(xp, case):
    _check_forward(xp.asarray, case, "cpu", xp)


@pytest.mark.parametrize("xp, case", CPU_ITEMS, indirect=["xp"], ids=str)
def test_backward_cpu(xp, case):
    _check_backward(xp.asarray, case, "cpu", xp)


@pytest.mark.parametrize("case", CASES + TF_NN_CASES + RANK_CASES, ids=str)
def test_forward_by_cells_cpu(case):
    """The forward by cells (``tconv._cpu._cells``), forced on every case, on NumPy: the measured
    rule picks it for few shapes (none of these)."""
    from tconv import _cpu

    a = case.arrays
    spec = tconv.make_spec(a["x"].shape, a["kernel"].shape, **_options(case))
    y = _cpu.conv2d_transpose(a["x"], a["kernel"], a["bias"] if "bias" in a else None, spec,
                              tuning=_cpu.Tuning(by_cells=True))
    assert_matches(y, a["y"], "y")


@pytest.fixture
def triton_asarray():
    """Torch tensors on TRITON_DEVICE."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    pytest.importorskip("triton", reason="triton is not installed")
    return lambda array: torch.asarray(array, device=TRITON_DEVICE)


def _unless_triton_unavailable(check, *args):
    """Run the check; skip only on tconv's own "triton backend not available" error."""
    try:
        check(*args)
    except ValueError as error:
        if "triton" in str(error) and "not available" in str(error):
            pytest.skip("triton backend not available")
        raise


@pytest.mark.parametrize("case", TRITON_CASES, ids=str)
def test_forward_triton(triton_asarray, case):
    _unless_triton_unavailable(_check_forward, triton_asarray, case, "triton")


@pytest.mark.parametrize("case", TRITON_CASES, ids=str)
def test_backward_triton(triton_asarray, case):
    _unless_triton_unavailable(_check_backward, triton_asarray, case, "triton")


def test_every_refused_geometry_is_one_keras_cannot_shape():
    """The manifest's refusals of the option grid are TF's size check on 'same' with an explicit
    output_padding
    (ceil(out / stride) != in), nothing else: no case was dropped for another reason."""
    refused = [entry for entry in manifest()["refused"] if entry["kind"] == "op"]
    assert refused
    for entry in refused:
        assert "Size of out_backprop doesn't match computed" in entry["error"], entry
        assert entry["params"]["padding"].lower() == "same", entry
        assert entry["params"]["output_padding"] is not None, entry


@pytest.mark.parametrize("entry", [entry for entry in manifest()["refused"]
                                   if entry["kind"] == "tf_nn"], ids=lambda entry: entry["name"])
def test_output_shapes_tf_refuses_are_refused_naming_the_admitted_range(entry):
    """TF refuses the sizes next to the admitted ones on each side: so does tconv, before any
    compute, saying which sizes it admits."""
    p = entry["params"]
    spatial = (p["height"], p["width"])
    x_shape = ((p["batch"], p["in_channels"], *spatial) if p["data_format"] == "channels_first"
               else (p["batch"], *spatial, p["in_channels"]))
    x = np.zeros(x_shape, p["dtype"])
    kernel = np.zeros((*p["kernel_size"], p["filters"], p["in_channels"]), p["dtype"])
    with pytest.raises(ValueError, match=r"output_shape.*between \d+ and \d+"):
        tconv.conv2d_transpose(x, kernel, **{key: p[key] for key in OPTIONS if key in p})
