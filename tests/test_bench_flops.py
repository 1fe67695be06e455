"""The benchmarks' exact FLOP counter (scripts/bench_common.py) and their small helpers."""

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from bench_common import PUBLISHED, SCRATCH, count_flops, output_dir  # noqa: E402
from bench_train import distinct_pairs  # noqa: E402

from crescend_jax.losses.infonce import infonce_loss  # noqa: E402


def test_scan_body_counts_once_per_trip():
    """A scan of L products [m, k] @ [k, n] costs L x 2 m n k (XLA's cost analysis counts the body once)."""
    m, k, n, trips = 8, 16, 4, 5
    w = jnp.ones((k, k))

    def f(x):
        return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=trips)[0] @ jnp.ones((k, n))

    flops = count_flops(f, jnp.ones((m, k)))
    assert flops.dot == trips * 2 * m * k * k + 2 * m * k * n
    assert flops.scan_trips == trips and flops.while_loops == 0


def test_mlp_gradient_matches_the_hand_count():
    """grad of sum(gelu(x W1) W2) w.r.t. (W1, W2): forward 2BDH + 2BHO, backward dW2 2BHO, dh 2BHO, dW1 2BDH
    (no product for dx: x is not differentiated)."""
    b, d, h, o = 32, 24, 16, 8
    loss = lambda params, x: jnp.sum(jax.nn.gelu(x @ params[0]) @ params[1])
    flops = count_flops(jax.grad(loss), (jnp.ones((d, h)), jnp.ones((h, o))), jnp.ones((b, d)))
    assert flops.dot == 4 * b * d * h + 6 * b * h * o
    assert flops.transcendental > 0 and flops.elementwise > 0


@pytest.mark.parametrize("block,products,scans", [(16, 6, True), (64, 4, False)])
def test_tiled_infonce_counts_every_tile(block, products, scans):
    """The tiled InfoNCE's value and gradient: 2 B^2 E in the forward tiles, 4 B^2 E in the backward (the tile's
    logits recomputed, then H k), whatever the tile size (scan trips multiplied in); a batch that is one tile
    (B <= block) keeps exp(s - lse) from the forward, so its backward is H k alone (4 B^2 E in all, no scan)."""
    size, dim = 64, 8
    z = jnp.ones((size, dim)) / np.sqrt(dim)
    group, mask = jnp.arange(size, dtype=jnp.int32) // 4, jnp.ones(size)
    grad = jax.value_and_grad(lambda z: infonce_loss(z, group, where=mask, temperature=0.1, block_size=block)[0])
    flops = count_flops(grad, z)
    assert flops.dot == products * size * size * dim
    assert (flops.scan_trips > 0) == scans


def test_distinct_pairs_dedupes_and_skips_padding():
    rows = np.array([0, 1, 2, 3, 1, 0, 5, -1])  # slots of 4: {0,1,2,3} -> 6 pairs; {1,0,5,-1} -> {0,1} again, 2 new
    assert distinct_pairs(rows, 4) == 8


def test_output_goes_to_scratch_unless_published(tmp_path):
    args = lambda **kw: argparse.Namespace(**{"out": None, "publish": False, **kw})
    assert output_dir(args()) == SCRATCH
    assert output_dir(args(publish=True)) == PUBLISHED
    assert output_dir(args(out=str(tmp_path / "x"))) == tmp_path / "x"
    with pytest.raises(SystemExit):
        output_dir(args(out=str(tmp_path), publish=True))


def test_target_verdicts_and_readme_passage(tmp_path):
    """bench_changes reads the targets off the result files (1.2x the reference, 80% of matmul; a cell measured on
    one side only says so; a loaded reference run gives no speed verdict), and bench_readme --write replaces only
    its marked passage."""
    import json

    import bench_readme
    from bench_changes import verdicts

    quiet = {"cores": 2, "load_average_start": [1.0], "load_average_end": [1.5]}
    reference = {"machine": quiet, "results": [{"approach": "A", "dim": 4096, "batch": 1024, "encoded_ratio": 1.25},
                             {"approach": "B", "dim": 4096, "batch": 1024, "encoded_ratio": 0.9}]}
    train = {"results": [{"approach": "approach_a", "dim": 4096, "batch": 1024, "fraction_of_matmul": 0.85},
                         {"approach": "approach_b", "dim": 4096, "batch": 1024, "fraction_of_matmul": 0.5},
                         {"approach": "approach_c", "dim": 4096, "batch": 1024, "fraction_of_matmul": 0.81}]}
    got = {v["approach"]: (v["speed"], v["speed_met"], v["matmul_met"]) for v in verdicts(reference, train)}
    assert got == {"A": (1.25, True, True), "B": (0.9, False, False), "C": (None, False, True)}
    loaded = {**reference, "machine": {**quiet, "load_average_end": [9.0]}}  # no speed verdict from a loaded run
    assert {v["speed"] for v in verdicts(loaded, train)} == {None}
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{bench_readme.MARKERS[0]}\nold\n{bench_readme.MARKERS[1]}\nafter\n")
    (tmp_path / "gpu.json").write_text(json.dumps({"machine": {"dry_run": True}}))
    bench_readme.write_readme(tmp_path, readme)
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "No accelerator figure exists" in text


def test_train_md_carries_the_back_to_back_reference_columns(tmp_path):
    import json

    from bench_train import write_outputs

    row = {"approach": "approach_b", "batch": 1024, "dim": 4096, "pairs_per_encoded": 3.5, "encoded_per_s": 8000.0,
           "encoded_per_s_with_input": 7000.0, "pairs_per_s": 28000.0, "pairs_per_step": 3584, "seconds_alone": 0.128,
           "input_overhead": 0.1, "matmul_flops": 1.5e10, "matmul_flops_per_encoded": 1.45e7,
           "elementwise_flops": 1e8, "transcendental_flops": 1e6, "fraction_of_matmul": 0.7, "load_average": [1.6]}
    machine = {"date": "2026-12-06 23:28", "backend": "cpu", "cpu": "AMD EPYC", "cores": 2, "devices": 1, "jax": "x",
               "xla_flags": "", "matmul_gflops": 167.0, "matmul_gflops_runs": [167.0, 166.0], "repeats": 5,
               "load_average_start": [1.5], "load_average_end": [1.9]}
    (tmp_path / "train.json").write_text(json.dumps({"machine": machine, "results": [
        row, {**row, "approach": "baseline", "pairs_per_step": 0}]}))
    write_outputs(tmp_path)
    assert "ref encoded/s" not in (tmp_path / "train.md").read_text()  # no reference run yet: no columns
    (tmp_path / "reference.json").write_text(json.dumps({"machine": {**machine, "date": "2026-12-06 23:45"},
                                                         "results": [{"approach": "B", "batch": 1024, "dim": 4096,
                                                                      "reference_encoded_per_s": 8189.0,
                                                                      "reference_pairs_per_s": 4094.5,
                                                                      "encoded_ratio": 0.999}]}))
    write_outputs(tmp_path)
    text = (tmp_path / "train.md").read_text()
    assert "reference.md, 2026-12-06 23:45" in text
    b = next(line for line in text.splitlines() if line.startswith("| approach_b |"))
    assert b.endswith("| 8,189 | 4,094 | **1.00x** |")  # the back-to-back run's ratio, not 8,000 / 8,189
    assert next(line for line in text.splitlines() if line.startswith("| baseline |")).endswith("|  |  |  |")
