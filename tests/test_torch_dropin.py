"""tconv.torch.ConvTranspose2d and tconv.torch.conv_transpose2d: drop-ins for torch's, checked
against torch's own ops in float64 on PyTorch's own test cases, read at test time from the
installed torch's testing package (the ConvTranspose2d entries of ``common_nn`` and
``common_modules``, the samples of the ``nn.functional.conv_transpose2d`` OpInfo), never copied."""

import functools
import io

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
pytest.importorskip("expecttest", reason="torch's testing package needs expecttest")
import torch.nn.functional as F  # noqa: E402

import tconv.torch as tconv_torch  # noqa: E402

DTYPE = torch.float64


@functools.cache
def _common_nn_entries():
    from torch.testing._internal import common_nn

    entries = common_nn.module_tests + common_nn.get_new_module_tests()
    return [entry for entry in entries
            if "ConvTranspose2d" in entry.get("module_name", entry.get("fullname", ""))]


def _entry_id(entry):
    return entry.get("fullname") or "_".join(filter(None, (entry["module_name"],
                                                           entry.get("desc"))))


@functools.cache
def _module_info():
    from torch.testing._internal.common_modules import module_db

    return next(info for info in module_db if info.module_cls is torch.nn.ConvTranspose2d)


@functools.cache
def _opinfo():
    from torch.testing._internal.common_methods_invocations import op_db

    return next(op for op in op_db if op.name == "nn.functional.conv_transpose2d")


def _assert_same_outputs_and_gradients(ours, theirs, our_inputs, their_inputs):
    """Forward values, and the gradients of every input for one random upstream gradient."""
    y, y_expected = ours(), theirs()
    torch.testing.assert_close(y, y_expected)
    dy = torch.randn_like(y_expected)
    gradients = torch.autograd.grad(y, our_inputs, dy)
    expected = torch.autograd.grad(y_expected, their_inputs, dy)
    assert len(gradients) == len(expected) >= 2
    for gradient, expected_gradient in zip(gradients, expected):
        torch.testing.assert_close(gradient, expected_gradient)


def _paired_modules(build_theirs, build_ours, seed=0):
    """torch's module and ours from one seed, in float64; ours must come out identical."""
    torch.manual_seed(seed)
    theirs = build_theirs().to(DTYPE)
    torch.manual_seed(seed)
    ours = build_ours().to(DTYPE)
    assert isinstance(ours, tconv_torch.ConvTranspose2d)
    for (name, ours_tensor), (their_name, their_tensor) in zip(ours.state_dict().items(),
                                                                theirs.state_dict().items()):
        assert name == their_name
        torch.testing.assert_close(ours_tensor, their_tensor, rtol=0, atol=0)
    return ours, theirs


def _check_modules(ours, theirs, x):
    x = x.detach().requires_grad_(True)
    _assert_same_outputs_and_gradients(lambda: ours(x), lambda: theirs(x),
                                       [x, *ours.parameters()], [x, *theirs.parameters()])


@pytest.mark.parametrize("entry", _common_nn_entries(), ids=_entry_id)
def test_common_nn_module_entries(entry, monkeypatch):
    if "constructor" in entry:
        def build_ours():  # the entry's own constructor, building our class in torch's place
            with monkeypatch.context() as patch:
                patch.setattr(torch.nn, "ConvTranspose2d", tconv_torch.ConvTranspose2d)
                return entry["constructor"]()

        ours, theirs = _paired_modules(entry["constructor"], build_ours)
    else:
        args = entry["constructor_args"]
        ours, theirs = _paired_modules(lambda: torch.nn.ConvTranspose2d(*args),
                                       lambda: tconv_torch.ConvTranspose2d(*args))
    _check_modules(ours, theirs, torch.randn(entry["input_size"], dtype=DTYPE))


def _module_inputs():
    info = _module_info()
    return info.module_inputs_func(info, device="cpu", dtype=DTYPE, requires_grad=True,
                                   training=True)


def test_common_modules_inputs():
    module_inputs = _module_inputs()
    assert module_inputs
    for module_input in module_inputs:
        constructor, forward = module_input.constructor_input, module_input.forward_input
        ours, theirs = _paired_modules(
            lambda: torch.nn.ConvTranspose2d(*constructor.args, **constructor.kwargs),
            lambda: tconv_torch.ConvTranspose2d(*constructor.args, **constructor.kwargs))
        (x,) = forward.args
        _check_modules(ours, theirs, x)


def test_opinfo_samples_through_the_functional():
    samples = list(_opinfo().sample_inputs("cpu", DTYPE, requires_grad=True))
    assert len(samples) >= 12
    unbatched = 0
    for sample in samples:
        inputs = [sample.input, *(arg for arg in sample.args if arg is not None)]
        unbatched += sample.input.dim() == 3
        _assert_same_outputs_and_gradients(
            lambda: tconv_torch.conv_transpose2d(sample.input, *sample.args, **sample.kwargs),
            lambda: F.conv_transpose2d(sample.input, *sample.args, **sample.kwargs), inputs,
            inputs)
    assert unbatched == len(samples) // 2


def test_a_saved_torch_state_dict_loads_unchanged_and_gives_torchs_output():
    torch.manual_seed(3)
    theirs = torch.nn.ConvTranspose2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0),
                                      output_padding=(1, 0), groups=2, dilation=(1, 2))
    buffer = io.BytesIO()
    torch.save(theirs.state_dict(), buffer)
    buffer.seek(0)
    ours = tconv_torch.ConvTranspose2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0),
                                       output_padding=(1, 0), groups=2, dilation=(1, 2))
    ours.load_state_dict(torch.load(buffer))
    assert list(ours.state_dict()) == ["weight", "bias"]
    assert ours.weight.shape == (4, 3, 3, 2)
    x = torch.randn(2, 4, 5, 6)
    torch.testing.assert_close(ours(x), theirs(x))


def test_initialization_is_torchs_from_the_same_seed():
    for kwargs in ({}, {"groups": 3, "bias": False}, {"dilation": 2, "stride": 3}):
        ours, theirs = _paired_modules(lambda: torch.nn.ConvTranspose2d(6, 9, (3, 4), **kwargs),
                                       lambda: tconv_torch.ConvTranspose2d(6, 9, (3, 4), **kwargs),
                                       seed=7)
        assert (ours.bias is None) == ("bias" in kwargs)


def test_batchless_input_gives_a_batchless_output():
    ours, theirs = _paired_modules(lambda: torch.nn.ConvTranspose2d(3, 2, 3, stride=2),
                                   lambda: tconv_torch.ConvTranspose2d(3, 2, 3, stride=2))
    x = torch.randn(3, 4, 5, dtype=DTYPE)
    assert ours(x).shape == theirs(x).shape == (2, 9, 11)
    _check_modules(ours, theirs, x)


# Input 5 x 3 with kernel 3, stride 2, dilation (1, 3), padding (1, 0): torch admits heights 9-10
# and widths 11-12, the size given alone, with the batch and channels, or with the channels of a
# batchless input.
@pytest.mark.parametrize("output_size", [(9, 11), (10, 12), [2, 2, 10, 11], (2, 10, 12)])
def test_forward_output_size_picks_the_output_padding_as_torch(output_size):
    ours, theirs = _paired_modules(
        lambda: torch.nn.ConvTranspose2d(3, 2, 3, stride=2, dilation=(1, 3), padding=(1, 0)),
        lambda: tconv_torch.ConvTranspose2d(3, 2, 3, stride=2, dilation=(1, 3), padding=(1, 0)))
    x = torch.randn((3, 5, 3) if len(output_size) == 3 else (2, 3, 5, 3), dtype=DTYPE)
    y = ours(x, output_size=output_size)
    assert y.shape[-2:] == tuple(output_size[-2:])
    torch.testing.assert_close(y, theirs(x, output_size=output_size))


def test_output_size_out_of_range_is_refused_as_torch_refuses_it():
    ours = tconv_torch.ConvTranspose2d(3, 2, 3, stride=2)
    theirs = torch.nn.ConvTranspose2d(3, 2, 3, stride=2)
    x = torch.randn(1, 3, 4, 4)
    for output_size in [(8, 9), (11, 9), (9,)]:
        with pytest.raises(ValueError) as expected:
            theirs(x, output_size=output_size)
        with pytest.raises(ValueError) as caught:
            ours(x, output_size=output_size)
        assert str(caught.value) == str(expected.value)


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular", "bogus"])
def test_padding_modes_other_than_zeros_are_refused_as_torch_refuses_them(padding_mode):
    with pytest.raises(ValueError) as expected:
        torch.nn.ConvTranspose2d(3, 2, 3, padding_mode=padding_mode)
    with pytest.raises(ValueError) as caught:
        tconv_torch.ConvTranspose2d(3, 2, 3, padding_mode=padding_mode)
    assert str(caught.value) == str(expected.value)
    assert "zeros" in str(caught.value)


def test_module_keeps_torchs_attributes_and_dtype_device_arguments():
    ours = tconv_torch.ConvTranspose2d(4, 6, 3, stride=(2, 1), padding=1, output_padding=(1, 0),
                                       groups=2, bias=False, dilation=2, dtype=DTYPE,
                                       device="cpu")
    theirs = torch.nn.ConvTranspose2d(4, 6, 3, stride=(2, 1), padding=1, output_padding=(1, 0),
                                      groups=2, bias=False, dilation=2, dtype=DTYPE, device="cpu")
    assert repr(ours).replace(type(ours).__name__, "") == repr(theirs).replace(
        type(theirs).__name__, "")
    assert isinstance(ours, torch.nn.ConvTranspose2d)
    assert ours.weight.dtype == DTYPE and ours.bias is None


def test_functional_refuses_bad_input_naming_the_argument():
    x = torch.randn(1, 3, 4, 4)
    weight = torch.randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match="input.*3-D.*4-D"):
        tconv_torch.conv_transpose2d(x[0, 0], weight)
    with pytest.raises(ValueError, match="weight"):
        tconv_torch.conv_transpose2d(x, torch.randn(2, 2, 3, 3))
    with pytest.raises(ValueError, match="weight"):
        tconv_torch.conv_transpose2d(x, weight[0])
    with pytest.raises(ValueError, match="output_padding"):
        tconv_torch.conv_transpose2d(x, weight, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="padding"):
        tconv_torch.conv_transpose2d(x, weight, padding=-1)


def test_functional_output_padding_up_to_the_larger_of_stride_and_dilation():
    x = torch.randn(2, 3, 4, 5, dtype=DTYPE, requires_grad=True)
    weight = torch.randn(3, 4, 2, 3, dtype=DTYPE, requires_grad=True)
    for options in ({"stride": 1, "dilation": 3, "output_padding": 2},
                    {"stride": (3, 1), "dilation": (1, 2), "output_padding": (2, 1),
                     "padding": (2, 1)}):
        _assert_same_outputs_and_gradients(
            lambda: tconv_torch.conv_transpose2d(x, weight, **options),
            lambda: F.conv_transpose2d(x, weight, **options), [x, weight], [x, weight])


def test_functional_compiles_without_a_graph_break():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    weight = torch.randn(3, 4, 3, 3, requires_grad=True)
    bias = torch.randn(4, requires_grad=True)

    def loss(x, weight, bias):
        return tconv_torch.conv_transpose2d(x, weight, bias, stride=2, padding=1,
                                            output_padding=1).square().sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    expected = torch.autograd.grad(loss(x, weight, bias), [x, weight, bias])
    for gradient, expected_gradient in zip(
            torch.autograd.grad(compiled(x, weight, bias), [x, weight, bias]), expected):
        torch.testing.assert_close(gradient, expected_gradient)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device: the drop-ins' Triton path runs on a GPU")
def test_dropins_run_the_triton_kernels_on_cuda(monkeypatch):
    pytest.importorskip("triton", reason="triton is not installed")
    from tconv import _triton

    ran = []
    for name in ("conv2d_transpose", "conv2d_transpose_backward"):
        function = getattr(_triton, name)
        monkeypatch.setattr(_triton, name, lambda *args, function=function, name=name: (
            ran.append(name), function(*args))[1])
    ours, theirs = _paired_modules(
        lambda: torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                         groups=2, dilation=(1, 2)),
        lambda: tconv_torch.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                            groups=2, dilation=(1, 2)))
    _check_modules(ours.cuda(), theirs.cuda(), torch.randn(2, 4, 5, 6, dtype=DTYPE, device="cuda"))
    assert ran == ["conv2d_transpose", "conv2d_transpose_backward"]
