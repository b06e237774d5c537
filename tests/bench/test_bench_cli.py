"""``cnntui bench --json`` end to end, as a subprocess, with the smallest settings."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_json_has_the_documented_keys(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cnntui", "bench", "--json", "--repeat", "1", "--batch", "1", "4"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {"threads", "rounds", "versions", "malloc_tuned", "results", "ratios", "speedups",
            "target"} <= doc.keys()
    assert doc["rounds"] == 1 and doc["threads"] >= 1
    seen = {(r["impl"], r["dtype"], r["batch"]) for r in doc["results"]}
    assert ("lesson", "float64", 1) in seen
    for impl in ("numpy", "torch"):
        for dtype in ("float64", "float32"):
            assert {(impl, dtype, 1), (impl, dtype, 4)} <= seen
    keys = {"us_per_image", "us_per_image_min", "us_per_image_max", "calls_per_round",
            "faults_per_call"}
    for r in doc["results"]:
        assert keys <= r.keys()
        assert 0 < r["us_per_image_min"] <= r["us_per_image"] <= r["us_per_image_max"]
        assert r["faults_per_call"] >= 0
    assert {(r["dtype"], r["batch"]) for r in doc["ratios"]} == {
        (d, b) for d in ("float64", "float32") for b in (1, 4)}
    assert all(r["numpy_over_torch"] > 0 for r in doc["ratios"])
    assert all(s["numpy_over_lesson"] > 1 for s in doc["speedups"])
    assert set(doc["target"]) == {"batch", "max_ratio", "min_speedup", "met"}


def test_bench_rejects_bad_flags():
    proc = subprocess.run([sys.executable, "-m", "cnntui", "bench", "--repeat", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "--repeat" in proc.stderr and "Traceback" not in proc.stderr
