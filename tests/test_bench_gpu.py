"""The accelerator benchmark's CPU dry run (tiny sizes) and its peak table: what CI runs of scripts/bench_gpu.py."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench_gpu  # noqa: E402


@pytest.mark.parametrize("kind, expected", [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.5),
    ("NVIDIA H200", 989.4), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA L4", 121.0),
])
def test_peak_table_names_the_device(kind, expected):
    peak, source = bench_gpu.device_peak(kind)
    assert peak["bf16"] == expected and "datasheet" in source


def test_unknown_device_has_no_peak():
    peak, why = bench_gpu.device_peak("cpu")
    assert peak is None and "cpu" in why


def test_dry_run_writes_every_section(tmp_path):
    out = bench_gpu.main(["--dry-run", "--out", str(tmp_path)])
    report = json.loads((out / "gpu.json").read_text())
    measured = {(r["approach"], r["dtype"]) for r in report["steps"]}
    assert {(name, "fp32") for name in bench_gpu.APPROACHES} <= measured
    if not bench_gpu.bf16_supported():
        assert "bf16 skipped" in report["bf16_note"]
    else:
        assert {(name, "bf16") for name in bench_gpu.APPROACHES} <= measured
    assert [r["n"] for r in report["infonce"]] == [256]
    assert all(r["matmul_flops"] > 0 and r["seconds_alone"] > 0 and r["input_share"] < 1 for r in report["steps"])
    text = (out / "gpu.md").read_text()
    assert "DRY RUN" in text and report["machine"]["device_kind"] in text and "InfoNCE alone" in text
