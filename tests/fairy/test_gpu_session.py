"""bench/gpu_session.py, the one prepared GPU run, dry-run on the CPU: every configuration it measures writes
its numbers as it goes, the options are switched off again between configurations, a configuration that would
overrun the time budget is skipped and says so, and the options that paid are combined."""

from __future__ import annotations

import json
import pathlib

import pytest

BENCH = pathlib.Path(__file__).parents[2] / "bench"
_SMALL = ["--device", "cpu", "--half", "fp32", "--frames", "4", "--width", "64", "--height", "64", "--steps", "1",
          "--batch-size", "2"]


@pytest.fixture
def gpu_session(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_session

    return gpu_session


@pytest.mark.slow
def test_the_session_measures_each_configuration_and_combines_what_paid(tmp_path, gpu_session):
    assert gpu_session.main([*_SMALL, "--only", "fp32,reduced-finest,best", "--out", str(tmp_path)]) == 0
    session = json.loads((tmp_path / "results.json").read_text())
    configs = session["configs"]
    assert list(configs) == ["fp32", "reduced-finest", "best", "best-reduced-finest"]
    base = configs["fp32"]["runs"]
    assert set(base) == {"K=3", "K=0"}
    for run in base.values():
        assert run["seconds"] > 0 and run["tflop"] > 0 and run["phases"]["vae encode"] > 0
    # Reduced anchors are counted as what they compute: fewer FLOPs than full anchors, more than none.
    def per_frame(runs):
        return runs["K=3" if "K=3" in runs else "K=0"]["gflop_by_part"]["frame, per step"]

    reduced = per_frame(configs["reduced-finest"]["runs"])
    assert per_frame({"K=0": base["K=0"]}) < reduced < per_frame({"K=3": base["K=3"]})
    assert set(configs["reduced-finest"]["runs"]) == {"K=3"}
    assert configs["best"]["config"]["dtype"] == "fp32" and configs["best"]["config"]["reduced_anchors"] is None
    assert configs["best-reduced-finest"]["config"]["reduced_anchors"] == "finest"
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert any(line.startswith("reduced-finest | ") for line in summary)
    assert any("fp32 K=3 phases:" in line for line in summary)


@pytest.mark.slow
def test_a_configuration_past_the_budget_is_skipped_and_named(tmp_path, gpu_session):
    assert gpu_session.main([*_SMALL, "--only", "fp32,merged", "--budget-s", "0", "--repeats", "2",
                             "--out", str(tmp_path)]) == 0
    configs = json.loads((tmp_path / "results.json").read_text())["configs"]
    # The first always runs (its time is what the rest are judged by), each K twice with --repeats 2.
    for run in configs["fp32"]["runs"].values():
        assert len(run["seconds_each"]) == 2 and run["seconds"] == min(run["seconds_each"])
    assert configs["merged"] == {"skipped": "not enough time left in --budget-s"}
    assert "merged | not enough time left" in (tmp_path / "summary.txt").read_text()


def test_the_best_combination_takes_only_options_that_beat_the_base_by_two_percent(gpu_session):
    def k3(seconds):
        return {"runs": {"K=3": {"seconds": seconds}}}

    results = {"fp16": k3(10.0), "bf16": k3(9.9), "merged": k3(9.0), "channels-last": k3(10.5),
               "cudnn-benchmark": k3(9.7), "batch-16": {"error": "OutOfMemoryError"}, "compiled": k3(8.0)}
    best = gpu_session.choose_best("fp16", results)
    assert (best.dtype, best.kernel, best.channels_last, best.cudnn_benchmark, best.batch_size, best.compiled) == (
        "fp16", "merged", False, True, None, True)
    assert gpu_session.choose_best("fp16", {"fp16": {"error": "x"}}) is None


def test_the_median_run_is_reported_with_every_time_and_the_highest_memory(gpu_session):
    runs = [{"seconds": 3.0, "peak_memory_gib": 1.0}, {"seconds": 1.0, "peak_memory_gib": 2.0},
            {"seconds": 2.0, "peak_memory_gib": 1.5}]
    assert gpu_session.median_run(runs) == {"seconds": 2.0, "peak_memory_gib": 2.0, "seconds_each": [3.0, 1.0, 2.0]}
    assert gpu_session.median_run(runs[:1]) == runs[0]
