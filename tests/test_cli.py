"""``tconv bench`` / ``python -m tconv``: the command runs a case end to end (table, JSON, chart),
refuses unknown cases, and its ratios compare against the right peers."""

import json
import subprocess
import sys

import pytest

from tconv import cli

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
    for pass_name in cli.PASSES:
        assert row["times_ms"][pass_name]["tconv numpy"] > 0
    assert result["sgemm_gflops"] > 0
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if "max_abs_error_tconv" in row:  # torch installed: the float32 result is as close as torch's
        assert row["max_abs_error_tconv"] <= 10 * row["max_abs_error_torch"] + 1e-5
        assert "torch" in row["peers"] and "tconv torch" not in row["peers"]


def test_unknown_case_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "no_such_layer"])
    assert "no_such_layer" in capsys.readouterr().err


def test_module_entry_point_prints_usage_without_a_command():
    done = subprocess.run([sys.executable, "-m", "tconv"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "tconv bench" in done.stderr


def test_ratio_is_against_the_faster_peer_on_the_same_kind_of_device():
    row = {"peers": ["torch", "tensorflow", "torch (GPU)"],
           "times_ms": {"forward": {"tconv numpy": 2.0, "torch": 3.0, "tensorflow": 5.0,
                                    "tconv triton (GPU)": 0.5, "torch (GPU)": 0.25}}}
    assert cli.ratio(row, "forward", "tconv numpy") == pytest.approx(1.5)
    assert cli.ratio(row, "forward", "tconv triton (GPU)") == pytest.approx(0.5)
    assert cli.ratio(row, "forward+backward", "tconv numpy") is None
    assert cli.geomean([2.0, 0.5, None]) == pytest.approx(1.0)


def test_case_table_is_the_issue_set():
    shapes = {case.name: case.spec.output_shape for case in cli.CASES}
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
    times = cli.interleaved_median_ms(
        {"a": (column("a"), None), "b": (column("b"), None), "c": (broken, None)}, errors,
        min_repeats=2 * cli.ROUNDS, budget_s=0.0, settle_s=0.0)
    assert set(times) == {"a", "b"} and all(ms >= 0 for ms in times.values())
    assert errors == {"c": "RuntimeError: no such kernel here"}
    # warm-ups, then rounds of turns of two timed calls each
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * cli.ROUNDS
