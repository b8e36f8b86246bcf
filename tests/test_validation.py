"""Bad input: one test per rule, each asserting the exception type and the argument it names.
Validation happens before any compute, so the CPU backend is made to fail loudly if reached."""

import numpy as np
import pytest

import tconv


pytestmark = pytest.mark.usefixtures("no_compute")

X = np.zeros((2, 4, 4, 3), np.float32)
K = np.zeros((3, 3, 5, 3), np.float32)


def _forward(x=X, kernel=K, bias=None, **options):
    return tconv.conv2d_transpose(x, kernel, bias, **options)


def _backward(dy=None, x=X, kernel=K, **options):
    if dy is None:
        dy = np.zeros((2, 6, 6, 5), np.float32)
    return tconv.conv2d_transpose_backward(dy, x, kernel, **options)


CASES = [
    # (exception, words the message must contain, call)
    (ValueError, ["x", "rank 4"], lambda: _forward(x=X[0])),
    (ValueError, ["kernel", "rank 4"], lambda: _forward(kernel=K[0])),
    (ValueError, ["kernel", "in_channels"], lambda: _forward(kernel=np.zeros((3, 3, 5, 2), np.float32))),
    (ValueError, ["groups", "dividing"], lambda: _forward(groups=2)),
    (ValueError, ["groups"], lambda: _forward(groups=0)),
    (TypeError, ["groups"], lambda: _forward(groups=1.0)),
    (ValueError, ["padding", "'valid' or 'same'"], lambda: _forward(padding="full")),
    (TypeError, ["padding"], lambda: _forward(padding=1.5)),
    (TypeError, ["strides"], lambda: _forward(strides=2.0)),
    (TypeError, ["strides"], lambda: _forward(strides=True)),
    (ValueError, ["strides", "tuple of 2 ints", "3 values"], lambda: _forward(strides=(1, 2, 3))),
    (TypeError, ["strides"], lambda: _forward(strides=(1, 2.0))),
    (ValueError, ["strides", "positive"], lambda: _forward(strides=0)),
    (ValueError, ["dilation_rate", "positive"], lambda: _forward(dilation_rate=(1, -1))),
    (TypeError, ["dilation_rate"], lambda: _forward(dilation_rate="2")),
    (TypeError, ["output_padding"], lambda: _forward(strides=2, output_padding=0.5)),
    (ValueError, ["output_padding", "lower than strides"], lambda: _forward(strides=2, output_padding=2)),
    (ValueError, ["output_padding", "lower than strides"], lambda: _forward(output_padding=(0, 1))),
    (ValueError, ["output_padding", ">= 0"], lambda: _forward(strides=2, output_padding=-1)),
    (ValueError, ["data_format"], lambda: _forward(data_format="NHWC")),
    (ValueError, ["bias", "(5,)"], lambda: _forward(bias=np.zeros(4, np.float32))),
    (ValueError, ["bias", "(5,)"], lambda: _forward(bias=np.zeros((1, 5), np.float32))),
    (TypeError, ["x", "dtype"], lambda: _forward(x=X.astype(np.int32), kernel=K.astype(np.int32))),
    (TypeError, ["kernel", "dtype"], lambda: _forward(kernel=K.astype(np.float64))),
    (TypeError, ["bias", "dtype"], lambda: _forward(bias=np.zeros(5, np.float64))),
    (TypeError, ["x", "list"], lambda: _forward(x=X.tolist())),
    (TypeError, ["kernel", "list"], lambda: _forward(kernel=K.tolist())),
    (ValueError, ["x", "spatial"], lambda: _forward(x=np.zeros((2, 0, 4, 3), np.float32))),
    (ValueError, ["output", "no pixels"], lambda: _forward(x=np.zeros((1, 1, 1, 3), np.float32),
                                                          kernel=np.zeros((4, 4, 5, 3), np.float32),
                                                          padding="same", strides=1,
                                                          output_padding=0)),
    (ValueError, ["backend"], lambda: _forward(backend="cuda")),
    (ValueError, ["dy", "output shape"], lambda: _backward(dy=np.zeros((2, 6, 6, 4), np.float32))),
    (ValueError, ["dy", "output shape"], lambda: _backward(dy=np.zeros((2, 7, 6, 5), np.float32))),
    (TypeError, ["dy", "dtype"], lambda: _backward(dy=np.zeros((2, 6, 6, 5), np.float64))),
    (TypeError, ["dy", "list"], lambda: _backward(dy=[[0.0]])),
    (ValueError, ["backend"], lambda: _backward(backend=None)),
]


@pytest.mark.parametrize("error, words, call", CASES,
                         ids=[f"{e.__name__}-{'-'.join(w)}" for e, w, _ in CASES])
def test_bad_input_is_refused_with_a_named_rule(error, words, call):
    with pytest.raises(error) as caught:
        call()
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_arrays_of_different_libraries_are_refused():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    with pytest.raises(TypeError, match="same array library.*x is numpy.*kernel is torch"):
        _forward(kernel=torch.zeros((3, 3, 5, 3)))


def test_output_shape_arguments_are_validated():
    with pytest.raises(ValueError, match="input_shape.*rank 4"):
        tconv.conv2d_transpose_output_shape((4, 4, 3), 3, 5)
    with pytest.raises(ValueError, match="kernel_size.*tuple of 2 ints"):
        tconv.conv2d_transpose_output_shape((None, 4, 4, 3), (3, 3, 3), 5)
    with pytest.raises(ValueError, match="filters"):
        tconv.conv2d_transpose_output_shape((None, 4, 4, 3), 3, 0)


def test_triton_backend_without_triton_says_how_to_get_it(monkeypatch):
    from tconv import _backends

    monkeypatch.setattr(_backends, "triton_installed", lambda: False)
    with pytest.raises(ValueError, match="backend='triton'.*triton package is not installed"):
        _forward(backend="triton")


def test_a_keras_json_naming_no_data_format_is_refused_naming_file_and_value(tmp_path,
                                                                            monkeypatch):
    (tmp_path / "keras.json").write_text('{"image_data_format": "NHWC"}')
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ValueError, match=r"image_data_format in .*keras\.json.*'NHWC'"):
        _forward()


def test_options_are_checked_without_an_input():
    """Every rule that needs no input shape holds at construction; a geometry that only some
    inputs cannot take (1x1 input, k=4, 'same', output_padding=0) is not refused there."""
    pytest.importorskip("torch", reason="torch is not installed")
    import tconv.torch

    module = tconv.torch.Conv2DTranspose(8, 8, 4, strides=2, padding="same", output_padding=0)
    assert module.kernel.shape == (4, 4, 8, 8)
    layer = tconv.Conv2DTranspose(8, 4, strides=2, padding="same", output_padding=0)
    assert layer.compute_output_shape((None, 2, 2, 3)) == (None, 2, 2, 8)
    with pytest.raises(ValueError, match="groups must divide filters"):
        tconv.torch.Conv2DTranspose(8, 6, 3, groups=4)
    with pytest.raises(ValueError, match="output_padding.*lower than strides"):
        tconv.Conv2DTranspose(8, 3, strides=2, output_padding=2)
