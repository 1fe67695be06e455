"""What every benchmark script shares: where results go, the machine and its load, timing, and exact FLOP counts.

* Output: results go to the scratch folder ``bench/tmp/`` (ignored by git) unless a script is given ``--publish``
  (write into the tracked ``bench/``) or ``--out DIR``.
* `machine`: the CPU / device, core count, jax version and the load average (1, 5, 15 min), recorded with every run
  because this machine is shared: a figure measured under load is slower than the same figure measured idle.
* `dot_flops`: the floating-point work of a function's matrix products, counted exactly from its jaxpr: every
  ``dot_general`` costs 2 x (output elements) x (contracted length), and the body of a ``scan`` counts ``length``
  times (XLA's own cost analysis counts a loop body once, so it undercounts a tiled InfoNCE by the number of tiles).
  Elementwise work is counted apart (`jaxpr_flops`: one FLOP per output element of an arithmetic primitive, one
  transcendental per output element of exp / log / tanh / erf ...), so that "fraction of the matmul rate" compares
  matmul work with the measured matmul rate, like for like.

Imported by scripts/bench_*.py (the scripts folder is on sys.path when a script runs) and by tests/test_bench_*.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "bench" / "tmp"
PUBLISHED = ROOT / "bench"


# ----------------------------------------------------------------------------------------------------- output


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """``--out DIR`` (default bench/tmp, ignored by git) and ``--publish`` (write into the tracked bench/)."""
    parser.add_argument("--out", default=None, help=f"result folder (default {SCRATCH.relative_to(ROOT)}/)")
    parser.add_argument("--publish", action="store_true", help="write into the tracked bench/ folder")


def output_dir(args: argparse.Namespace) -> Path:
    """The folder a run writes into (created): --out, else bench/ with --publish, else bench/tmp/."""
    if args.out and args.publish:
        raise SystemExit("give --out or --publish, not both")
    out = Path(args.out) if args.out else PUBLISHED if args.publish else SCRATCH
    out.mkdir(parents=True, exist_ok=True)
    return out


# ----------------------------------------------------------------------------------------------------- machine


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (runnable processes; this machine has ``os.cpu_count()`` cores)."""
    return [round(value, 2) for value in os.getloadavg()]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The machine a run measures: CPU model, cores, jax backend and device, XLA_FLAGS, load average now."""
    import jax

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "backend": jax.default_backend(),
            "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "load_average_start": load_average(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def load_note(info: dict[str, Any]) -> str:
    """One sentence on the load the run saw (from `machine` plus a ``load_average_end`` entry)."""
    start, end = info.get("load_average_start"), info.get("load_average_end", info.get("load_average_start"))
    quiet = max(start[0], end[0]) < 0.5 * (info.get("cores") or 1) + 0.3
    return (f"Load average (1/5/15 min) {start} at the start and {end} at the end on {info.get('cores')} cores: "
            + ("the machine was quiet." if quiet else
               "the machine was **shared with other jobs**; absolute figures are slower than on an idle machine, "
               "ratios measured back to back in one run are the figures to read."))


# ----------------------------------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` (each result waited for with block_until_ready)."""
    import jax

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def matmul_rate(size: int = 4096, repeats: int = 5) -> float:
    """Measured float32 FLOP/s of a jitted [size, size] @ [size, size] product (median of ``repeats``)."""
    import jax
    import numpy as np

    a = jax.random.normal(jax.random.key(0), (size, size), np.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    return 2 * size**3 / median(timed(lambda: f(a), repeats))


# ----------------------------------------------------------------------------------------------------- FLOPs


TRANSCENDENTAL = {"exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "erf", "erf_inv", "sin", "cos", "tan",
                  "rsqrt", "sqrt", "cbrt", "pow", "atan2", "erfc", "lgamma", "digamma"}
ARITHMETIC = {"add", "sub", "mul", "div", "neg", "max", "min", "abs", "sign", "square", "integer_pow", "select_n",
              "reduce_sum", "reduce_max", "reduce_min", "cumsum", "cummax", "add_any", "rem", "floor", "ceil",
              "round", "clamp", "argmax", "argmin", "reduce_prod", "eq", "ne", "lt", "le", "gt", "ge", "and", "or",
              "not", "nextafter"}
REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin", "cumsum", "cummax"}


@dataclasses.dataclass
class Flops:
    """Counted work of a function: matrix-product FLOPs (exact), other arithmetic and transcendental element
    operations (one per element), and the scan trips that were multiplied in; ``while_loops`` counts loops of
    unknown trip count (their body counted once: the count is then a lower bound)."""

    dot: float = 0.0
    elementwise: float = 0.0
    transcendental: float = 0.0
    scan_trips: int = 0
    while_loops: int = 0

    def add(self, other: "Flops", times: float = 1.0) -> None:
        self.dot += times * other.dot
        self.elementwise += times * other.elementwise
        self.transcendental += times * other.transcendental
        self.scan_trips += other.scan_trips
        self.while_loops += other.while_loops

    @property
    def total(self) -> float:
        return self.dot + self.elementwise + self.transcendental


def _size(aval) -> int:
    size = 1
    for d in getattr(aval, "shape", ()):
        size *= int(d)
    return size


def _dot_general_flops(eqn) -> float:
    """2 x output elements x contracted length of one dot_general."""
    (contract_lhs, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval
    contracted = 1
    for d in contract_lhs:
        contracted *= int(lhs.shape[d])
    return 2.0 * _size(eqn.outvars[0].aval) * contracted


def _sub_jaxprs(value) -> list:
    """The jaxprs held in one equation parameter (a Jaxpr, a ClosedJaxpr, or a tuple of them)."""
    from jax.extend import core

    if isinstance(value, core.ClosedJaxpr):
        return [value.jaxpr]
    if isinstance(value, core.Jaxpr):
        return [value]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _sub_jaxprs(v)]
    return []


def jaxpr_flops(jaxpr) -> Flops:
    """`Flops` of a (closed) jaxpr, recursing into calls: scan bodies x length, cond = its costliest branch,
    shard_map bodies x the mesh size, while bodies once (counted in ``while_loops``)."""
    from jax.extend import core

    if isinstance(jaxpr, core.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    flops = Flops()
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            flops.dot += _dot_general_flops(eqn)
            continue
        if name == "scan":
            body = jaxpr_flops(eqn.params["jaxpr"])
            length = int(eqn.params["length"])
            flops.add(body, length)
            flops.scan_trips += length
            continue
        if name == "while":
            flops.add(jaxpr_flops(eqn.params["body_jaxpr"]))
            flops.add(jaxpr_flops(eqn.params["cond_jaxpr"]))
            flops.while_loops += 1
            continue
        if name == "cond":
            branches = [jaxpr_flops(b) for b in eqn.params["branches"]]
            flops.add(max(branches, key=lambda f: f.total))
            continue
        if name == "shard_map":
            mesh = eqn.params["mesh"]
            flops.add(jaxpr_flops(eqn.params["jaxpr"]), int(mesh.size))
            continue
        subs = [j for key, value in eqn.params.items() if key not in ("bwd", "fwd_jaxpr_thunk")
                for j in _sub_jaxprs(value)]
        if subs:  # pjit, closed_call, remat, custom_jvp_call, custom_vjp_call: the function actually run
            for sub in subs[:1]:
                flops.add(jaxpr_flops(sub))
            continue
        if name in TRANSCENDENTAL:
            flops.transcendental += sum(_size(v.aval) for v in eqn.outvars)
        elif name in REDUCTIONS:
            flops.elementwise += sum(_size(v.aval) for v in eqn.invars[:1])
        elif name in ARITHMETIC:
            flops.elementwise += sum(_size(v.aval) for v in eqn.outvars)
    return flops


def count_flops(fn: Callable, *args, **kwargs) -> Flops:
    """`Flops` of ``fn(*args, **kwargs)`` (traced with jax.make_jaxpr; nothing runs)."""
    import jax

    return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs))


def xla_flops(compiled) -> float:
    """XLA's cost-analysis FLOPs of a compiled function (loop bodies counted once: a lower bound with scans)."""
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float((analysis or {}).get("flops", float("nan")))
