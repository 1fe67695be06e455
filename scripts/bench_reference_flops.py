"""Matmul FLOPs of the PyTorch reference's training steps, and torch's matmul rate: run by bench_reference.py with
the reference harness's own Python (``PEER/venv/bin/python``), never imported by the project.

    PEER/venv/bin/python scripts/bench_reference_flops.py --peer PEER --cells A:128:4096,B:512:1024,...

Each cell ``approach:N:width`` builds the reference's model and batch through the harness in PEER
(``PEER/bench_train.py``: ``build`` and ``make_batch``, the reference's own classes imported unmodified from
PEER/src) and counts one training step (``training_step`` + backward; A with the harness's dense InfoNCE, as it is
timed) with ``torch.utils.flop_counter.FlopCounterMode``: matrix products (mm, addmm, bmm, bilinear's einsum) forward
and backward, 2 m n k each, the same count as `bench_common.count_flops`'s matmul FLOPs. Elementwise work and the
optimizer are not counted. Then ``--matmul-size`` (4,096) times the median of five [n, n] @ [n, n] float32 products
on ``--threads`` threads (the harness's 2). Prints one JSON line per cell and one {"torch_matmul_flops": ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", required=True, help="the reference harness folder (setup.sh's OUT_DIR)")
    parser.add_argument("--cells", default="", help="comma-separated approach:N:width (N pairs for A/B, rows for C)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--matmul-size", type=int, default=4096)
    args = parser.parse_args()
    sys.path.insert(0, args.peer)
    warnings.filterwarnings("ignore")
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import bench_train as harness  # the reference harness (PEER/bench_train.py), not this repository's script

    harness._setup_paths()
    torch.set_num_threads(args.threads)
    for cell in filter(None, args.cells.split(",")):
        approach, n, width = cell.split(":")
        n, width = int(n), int(width)
        torch.manual_seed(0)
        model = harness.build(approach, width, "mean")
        model.train()
        if approach == "A":
            import disentanglement.models.contrastive_ranking as ranking
            from bench_infonce import vectorized_infonce

            ranking.piece_based_infonce_loss = vectorized_infonce
        batch = harness.make_batch(approach, n, 1, width, 64)
        counter = FlopCounterMode(display=False)
        with counter:
            loss = model.training_step(batch, 0)
            loss.backward()
        print(json.dumps({"approach": approach, "n": n, "dim": width, "matmul_flops": counter.get_total_flops(),
                          "params": sum(p.numel() for p in model.parameters())}), flush=True)
    size = args.matmul_size
    a = torch.randn(size, size)
    torch.mm(a, a)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, a)
        times.append(time.perf_counter() - start)
    print(json.dumps({"torch_matmul_flops": 2 * size**3 / statistics.median(times), "threads": args.threads,
                      "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
