"""``tconv bench`` / ``python -m tconv``: the command runs a case end to end (table, JSON, chart),
refuses unknown cases, and its ratios compare against the right peers (:mod:`tconv.bench`)."""

import json
import subprocess
import sys

import pytest

from tconv import bench, cli

pytest.importorskip("matplotlib", reason="matplotlib (extra 'bench') is not installed")
pytest.importorskip("tqdm", reason="tqdm is not installed")


def test_bench_runs_a_case_and_writes_table_json_and_chart(tmp_path, capsys):
    assert cli.main(["bench", "cvae_d1", "--quick", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "cvae_d1" in table and "geomean" in table and "sgemm" in table
    result = json.loads((tmp_path / "bench.json").read_text())
    (row,) = result["cases"]
    assert row["case"] == "cvae_d1"
    assert row["flops_forward"] == 2 * 32 * 7 * 7 * 32 * 64 * 3 * 3
    for pass_name in bench.PASSES:
        assert row["times_ms"][pass_name]["tconv numpy"] > 0
        if "torch NCHW" in row["peers"]:   # torch is timed in both its layouts
            assert {"torch NCHW", "torch channels_last"} <= set(row["times_ms"][pass_name])
    assert result["sgemm_gflops"] > 0
    # The H100 floor of each pass: FLOPs, fewest bytes (x, kernel, bias, y once each, float32).
    forward = row["roofline_h100"]["forward"]
    assert forward["flops"] == row["flops_forward"]
    assert forward["bytes"] == 4 * (32 * 7 * 7 * 32 + 3 * 3 * 64 * 32 + 64 + 32 * 14 * 14 * 64)
    assert forward["tf32_ms"] == pytest.approx(max(forward["flops"] / 494e9,
                                                   forward["bytes"] / 3.35e9))
    assert "roofline of the same layers on an H100 SXM" in table
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if "max_abs_error_tconv" in row:  # torch installed: the float32 result is as close as torch's
        assert row["max_abs_error_tconv"] <= 10 * row["max_abs_error_torch"] + 1e-5
        assert "torch channels_last" in row["peers"] and "tconv torch" not in row["peers"]


def test_unknown_case_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "no_such_layer"])
    assert "no_such_layer" in capsys.readouterr().err


def test_module_entry_point_prints_usage_without_a_command():
    done = subprocess.run([sys.executable, "-m", "tconv"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "tconv bench" in done.stderr


def test_ratio_is_against_the_fastest_peer_on_the_same_kind_of_device():
    row = {"peers": ["torch NCHW", "torch channels_last", "tensorflow", "torch (GPU)"],
           "times_ms": {"forward": {"tconv numpy": 2.0, "torch NCHW": 4.0,
                                    "torch channels_last": 3.0, "tensorflow": 5.0,
                                    "tconv triton (GPU)": 0.5, "torch (GPU)": 0.25}}}
    assert bench.ratio(row, "forward", "tconv numpy") == pytest.approx(1.5)
    assert bench.ratio(row, "forward", "tconv triton (GPU)") == pytest.approx(0.5)
    assert bench.ratio(row, "forward+backward", "tconv numpy") is None
    assert bench.geomean([2.0, 0.5, None]) == pytest.approx(1.0)


def test_case_table_is_the_issue_set():
    shapes = {case.name: case.spec.output_shape for case in bench.CASES}
    assert shapes == {
        "dcgan_g2": (256, 14, 14, 64), "dcgan_g3": (256, 28, 28, 1), "cvae_d1": (32, 14, 14, 64),
        "pix2pix_u6": (1, 128, 128, 64), "pix2pix_out": (1, 256, 256, 3),
        "unet_up1": (4, 56, 56, 512), "seg_up4": (16, 128, 128, 32), "fcn_x8": (1, 256, 256, 21)}


def test_columns_are_timed_in_turn_and_a_failing_one_is_reported():
    order = []

    def column(name):
        return lambda: order.append(name)

    def broken():
        raise RuntimeError("no such kernel here")

    errors = {}
    times = bench.interleaved_median_ms(
        {"a": (column("a"), None), "b": (column("b"), None), "c": (broken, None)}, errors,
        min_repeats=2 * bench.ROUNDS, budget_s=0.0, settle_s=0.0)
    assert set(times) == {"a", "b"} and all(ms >= 0 for ms in times.values())
    assert errors == {"c": "RuntimeError: no such kernel here"}
    # warm-ups, then rounds of turns of two timed calls each
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * bench.ROUNDS


def test_torch_peer_layouts_compute_the_same_crop():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    case = bench.CASES[2]
    inputs = bench.case_inputs(case)
    nchw, channels_last = (bench.CPU_COLUMNS[name][0](case, *inputs)["forward"]()
                           for name in ("torch NCHW", "torch channels_last"))
    assert channels_last.stride()[1] == 1 and nchw.stride()[3] == 1   # channels innermost or not
    expected = bench.tconv_numpy(case, *inputs)["forward"]()
    for y in (nchw, channels_last):
        assert tuple(y.shape) == (case.batch, case.filters) + expected.shape[1:3]
        assert float((y.permute(0, 2, 3, 1) - torch.from_numpy(expected)).abs().max()) < 1e-4


def test_scaling_sweeps_batch_and_image_and_charts_time_per_flop(tmp_path):
    points = list(cli.scaling_cases())
    for layer in cli.SCALING_LAYERS:
        batches = [c.batch for name, sweep, c in points if name == layer and sweep == "batch"]
        sides = [c.size for name, sweep, c in points if name == layer and sweep == "image"]
        assert (batches[0], batches[-1], sides[0], sides[-1]) == (1, 256, 8, 256)
    fake = [{"layer": layer, "sweep": sweep, "flops_forward": case.spec.flops,
             "times_ms": {"forward": {"tconv numpy": case.spec.flops * 1e-8,
                                      "torch NCHW": case.spec.flops * 2e-8}}}
            for layer, sweep, case in points]
    cli.write_scaling_chart(fake, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
