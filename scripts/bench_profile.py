"""Where each training step's time goes: ``python scripts/bench_profile.py`` (writes profile.md and profile.json).

Five measurements, each in this process unless said otherwise (bench/tmp/ by default, ``--publish``: bench/):

1. **ops**: every approach's step alone (a fixed batch, as `bench_train.py` times it) at ``--rows`` rows of width
   ``--dim`` (4,096 = MuQ layers 9-12), traced with ``jax.profiler`` over ``--trace-steps`` steps. Each XLA thunk's
   time is attributed to a category from the compiled HLO: matrix products (a ``dot`` or a fusion around one: XLA
   runs them through YNNPACK) of the dense layers or of a loss, and the rest by the source line that emitted it
   (the HLO metadata's stack frames): InfoNCE tiles, pair-loss tiles, the C adversary's closed-form refit, the style
   term, LayerNorm / GELU / dropout, the optimizer (AdamW, gradient norm), layout copies and transposes. Control-flow
   thunks (while, conditional, call) are not counted themselves (their bodies are). The per-step sum of thunk times
   can differ from the wall time (thunks of independent ops run concurrently on the 2 threads; launch gaps; the
   dispatch event that encloses them is not counted).
2. **terms**: the step with one loss term switched off at a time (config overrides, e.g. approach C without its
   adversary): what each term costs end to end, fusion effects included. Interleaved medians.
3. **donation**: the step with and without donating the model and optimizer state (does XLA update in place?).
4. **matmul**: a plain [N, 4096] x [4096, 512] product with its backward (dW = X^T G, and dX = G W^T) in JAX and in
   torch (2 threads, a child process: the reference's framework), and the square [4096, 4096]^2: is XLA's CPU dot
   slower than torch's MKL / oneDNN on this CPU?
5. **flags**: the same steps (and the square matmul) in child processes under each XLA CPU flag set of ``FLAG_SETS``.

The work order at the end of profile.md is computed from these numbers (each item: the file and function to change,
what to change, and the time it can take back at most: the measured time of what it removes). The machine is shared:
the load average is recorded with every part; ratios within one part are measured back to back.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (ROOT, add_output_args, load_average, load_note, machine, matmul_rate,  # noqa: E402
                          median, output_dir, timed)

APPROACHES = ("approach_a", "approach_b", "approach_c")
# term name -> overrides that switch it off
TERMS = {
    "approach_a": {"InfoNCE (lambda_piece=0)": ["--config.model.loss.lambda_piece=0"]},
    "approach_b": {"agreement weights off": ["--config.model.loss.agreement_weighting=False"]},
    "approach_c": {
        "adversary (lambda_adv=0)": ["--config.model.loss.lambda_adv=0"],
        "InfoNCE (lambda_piece=0)": ["--config.model.loss.lambda_piece=0"],
        "style term (lambda_style=0)": ["--config.model.loss.lambda_style=0"],
        "adversary, InfoNCE and style term": ["--config.model.loss.lambda_adv=0", "--config.model.loss.lambda_piece=0",
                                              "--config.model.loss.lambda_style=0"],
    },
}
# label -> environment of a child process: XLA CPU flags (appended to XLA_FLAGS) or JAX settings
FLAG_SETS = {
    "default": {},
    "no XNNPACK/YNNPACK (Eigen dots)": {"XLA_FLAGS": "--xla_cpu_use_xnnpack=false"},
    "oneDNN matmul thunks": {"XLA_FLAGS": "--xla_cpu_use_onednn=true"},
    "YNN fusion of dots, eltwise, reduce": {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce"},
    "XNN graph fusion (greedy)": {"XLA_FLAGS": "--xla_cpu_experimental_xnn_graph_fusion_mode="
                                               "XNN_GRAPH_FUSION_MODE_GREEDY"},
    "fast math": {"XLA_FLAGS": "--xla_cpu_enable_fast_math=true"},
    "concurrency-optimised scheduler": {"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"},
    "single-threaded Eigen": {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"},
    "PRNG unsafe_rbg (dropout bits; not a flag: jax_default_prng_impl)": {"JAX_DEFAULT_PRNG_IMPL": "unsafe_rbg"},
}
QUICK_FLAG_SETS = ("default", "no XNNPACK/YNNPACK (Eigen dots)", "oneDNN matmul thunks",
                   "PRNG unsafe_rbg (dropout bits; not a flag: jax_default_prng_impl)")
CONTROL_FLOW = ("while", "conditional", "call")


# ----------------------------------------------------------------------------------------------------- HLO metadata


@dataclasses.dataclass
class Instruction:
    """One HLO instruction: its opcode, whether it is (or fuses) a dot, and the source stack that emitted it
    (innermost first: (file, function, line))."""

    name: str
    opcode: str
    is_dot: bool
    stack: list[tuple[str, str, int]]


def _table(lines: list[str], start: int, pattern: str) -> tuple[dict[int, str], int]:
    """Parse a numbered section ("1 <value>") of the HLO text's stack-frame tables from line ``start``."""
    out, i = {}, start
    while i < len(lines):
        match = re.match(pattern, lines[i])
        if not match:
            break
        out[int(match.group(1))] = match.group(2)
        i += 1
    return out, i


def parse_hlo(text: str) -> dict[str, Instruction]:
    """Instruction name -> `Instruction` for every instruction of a compiled module's text (``as_text()``)."""
    lines = text.splitlines()
    files, functions, locations, frames = {}, {}, {}, {}
    for i, line in enumerate(lines):
        if line == "FileNames":
            files, _ = _table(lines, i + 1, r'^(\d+) "(.*)"$')
        elif line == "FunctionNames":
            functions, _ = _table(lines, i + 1, r'^(\d+) "(.*)"$')
        elif line == "FileLocations":
            raw, _ = _table(lines, i + 1, r"^(\d+) \{(.*)\}$")
            for key, value in raw.items():
                fields = dict(re.findall(r"(\w+)=(\d+)", value))
                locations[key] = (files.get(int(fields.get("file_name_id", 0)), "?"),
                                  functions.get(int(fields.get("function_name_id", 0)), "?"),
                                  int(fields.get("line", 0)))
        elif line == "StackFrames":
            raw, _ = _table(lines, i + 1, r"^(\d+) \{(.*)\}$")
            for key, value in raw.items():
                fields = dict(re.findall(r"(\w+)=(\d+)", value))
                frames[key] = (int(fields.get("file_location_id", 0)), int(fields.get("parent_frame_id", 0)) - 1)

    def stack(frame: int) -> list[tuple[str, str, int]]:
        out, seen = [], set()
        while frame in frames and frame not in seen:
            seen.add(frame)
            location, parent = frames[frame]
            if location in locations:
                out.append(locations[location])
            frame = parent
        return out

    computations_with_dot, current, body = set(), None, []
    for line in lines:  # which computations hold a dot (fusions calling them are matmuls)
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) \(", line)
        if header and line.rstrip().endswith("{"):
            current, body = header.group(1), []
        elif line.startswith("}"):
            if current and any(" dot(" in b or "custom-call(" in b and "matmul" in b for b in body):
                computations_with_dot.add(current)
            current = None
        elif current:
            body.append(line)
    out = {}
    for line in lines:
        match = re.match(r"^\s+(?:ROOT )?%([\w.\-]+) = \S.*? ([a-z\-]+)\(", line)
        if not match:
            continue
        name, opcode = match.group(1), match.group(2)
        called = re.findall(r"calls=%([\w.\-]+)", line)
        is_dot = opcode in ("dot", "convolution") or (opcode == "fusion" and any(c in computations_with_dot
                                                                                  for c in called))
        frame = re.search(r"stack_frame_id=(\d+)", line)
        out[name] = Instruction(name, opcode, is_dot, stack(int(frame.group(1))) if frame else [])
    return out


def category(instruction: Instruction | None) -> tuple[str, str]:
    """(category, innermost project source "file:function:line" or "") of one instruction (module doc)."""
    if instruction is None:
        return "unattributed (runtime)", ""
    project = next(((f, fn, ln) for f, fn, ln in instruction.stack if "/crescend_jax/" in f), None)
    where = f"{project[0].split('/crescend_jax/')[1]}:{project[1]}:{project[2]}" if project else ""
    innermost = instruction.stack[0][0] if instruction.stack else ""
    if any("/optax/" in f for f, _, _ in instruction.stack):
        return "optimizer (AdamW, grad norm)", where
    if instruction.is_dot:
        if where.startswith("losses/"):
            return f"matmul in a loss ({where.split(':')[0][len('losses/'):]})", where
        if where.startswith("models/comparators.py"):
            return "matmul: comparison head", where
        return "matmul: encoder layers", where
    if where.startswith("losses/infonce.py"):
        return "InfoNCE tiles (non-matmul)", where
    if where.startswith("losses/adversarial.py"):
        if where.split(":")[1] in ("between_group_share", "within_group_variance_hinge"):
            return "style term", where
        return "adversary refit (moments, solve)", where
    if where.startswith("losses/"):
        return "pair-loss tiles (ranking / comparison)", where
    if where.startswith("models/comparators.py"):
        return "comparison head elementwise (pair features, tile)", where
    if innermost.endswith("flax/nnx/nn/normalization.py"):
        return "LayerNorm", where
    if innermost.endswith(("flax/nnx/nn/stochastic.py", "flax/nnx/rnglib.py")):
        return "dropout (RNG, masks)", where
    if instruction.opcode in ("copy", "transpose", "bitcast", "copy-start", "copy-done"):
        return "layout copies / transposes", where
    if where.startswith("train/input_pipeline.py"):
        return "gather", where
    if where.startswith("models/"):
        return "encoder elementwise (GELU, LayerNorm, dropout, normalise)", where
    return "other", where


# ----------------------------------------------------------------------------------------------------- trace


def thunk_times(trace_dir: Path, steps: int) -> dict[str, float]:
    """Seconds per step of every XLA thunk (instruction) in the perfetto trace written under ``trace_dir``."""
    paths = sorted(trace_dir.rglob("perfetto_trace.json.gz"))
    if not paths:
        return {}
    data = json.load(gzip.open(paths[-1]))
    events = data["traceEvents"] if isinstance(data, dict) else data
    total: dict[str, float] = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if (event.get("ph") != "X" or name.startswith(("$", "PjitFunction")) or "::" in name or " " in name):
            continue
        total[name] += event.get("dur", 0) * 1e-6
    return {name: seconds / steps for name, seconds in total.items()}


def profile_ops(name: str, rows: int, dim: int, trace_steps: int) -> dict:
    """Trace ``trace_steps`` steps of ``name`` and attribute each thunk's time (module doc, part 1)."""
    import jax

    import bench_train

    step = bench_train.build_step(name, rows, dim)
    timed(step.alone, 2)
    wall = median(timed(step.alone, 3))
    instructions = parse_hlo(step.lower().compile().as_text())
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            for _ in range(trace_steps):
                jax.block_until_ready(step.alone())
        traced_wall = (time.perf_counter() - start) / trace_steps
        times = thunk_times(Path(directory), trace_steps)
    by_category: dict[str, float] = collections.Counter()
    custom_calls: dict[str, float] = collections.Counter()
    ops = []
    for op, seconds in times.items():
        instruction = instructions.get(op)
        if instruction is not None and instruction.opcode in CONTROL_FLOW:
            continue
        cat, where = category(instruction)
        by_category[cat] += seconds
        if instruction is not None and instruction.opcode == "custom-call":
            custom_calls[where or op] += seconds
        ops.append({"op": op, "seconds": seconds, "category": cat, "source": where,
                    "opcode": instruction.opcode if instruction else "?"})
    ops.sort(key=lambda o: -o["seconds"])
    return {"approach": name, "rows": rows, "dim": dim, "wall_seconds": wall, "traced_wall_seconds": traced_wall,
            "thunk_seconds": sum(by_category.values()), "categories": dict(by_category), "top_ops": ops[:25],
            "custom_calls": dict(custom_calls),
            "matmul_flops": step.flops.dot, "load_average": load_average()}


# ----------------------------------------------------------------------------------------------------- terms, donation


def profile_terms(name: str, rows: int, dim: int, repeats: int) -> dict:
    """Step-alone medians with each of TERMS[name] switched off, interleaved with the full step."""
    import bench_train

    variants = {"full step": bench_train.build_step(name, rows, dim)}
    for label, overrides in TERMS.get(name, {}).items():
        variants[label] = bench_train.build_step(name, rows, dim, tuple(overrides))
    times = {label: [] for label in variants}
    for step in variants.values():
        timed(step.alone, 1)
    for _ in range(repeats):
        for label, step in variants.items():
            times[label] += timed(step.alone, 1)
    return {"approach": name, "rows": rows, "dim": dim, "load_average": load_average(),
            "seconds": {label: median(t) for label, t in times.items()},
            "matmul_flops": {label: step.flops.dot for label, step in variants.items()}}


def profile_donation(name: str, rows: int, dim: int, repeats: int) -> dict:
    """The step as the trainer jits it (model and optimizer state donated) against the same function without
    donation; and whether the compiled step aliases every state buffer to its output."""
    import jax
    import numpy as np

    import bench_train
    from crescend_jax.models import get_approach
    from crescend_jax.models.functions import model_functions
    from crescend_jax.runtime import distributed
    from crescend_jax.train.input_pipeline import gather, host_table, place_plan, place_table
    from crescend_jax.train.step import build_train_step
    from crescend_jax.train.optimizer import build_optimizer
    from crescend_jax.config import load_config

    path, own = bench_train.APPROACHES[name]
    config = load_config(ROOT / path, [*own, f"--config.train.batch_size={rows}"])
    approach = get_approach(config.model.name)
    approach.check_config(config)
    mesh = distributed.make_mesh()
    table = bench_train.synthetic_table(2 * rows, dim)
    functions = model_functions(approach, config, dim, mesh)
    state = functions.init(0)
    steps = build_train_step(functions, build_optimizer(config.train, state), mesh)
    opt = steps.init_optimizer(state)
    device_table = place_table(host_table(table, np.zeros(dim, np.float32), np.ones(dim, np.float32), 0), mesh)
    batch = jax.jit(gather)(device_table, place_plan(next(functions.approach.sampler(table, config, 0)), mesh))
    plain = jax.jit(steps.update.__wrapped__, out_shardings=(distributed.replicated(mesh),) * 3)
    text = steps.update.lower(state, opt, batch, np.int32(0)).compile().as_text()
    aliased = len(re.findall(r"\{\d+\}: \(\d+, \{\}, may-alias\)", text.split("\n", 1)[0]))
    carried = {"donated": (state, opt), "not donated": jax.tree.map(lambda a: a.copy(), (state, opt))}
    functions_ = {"donated": steps.update, "not donated": plain}

    def run(label):
        model_state, opt_state = carried[label]
        model_state, opt_state, metrics = functions_[label](model_state, opt_state, batch, np.int32(1))
        carried[label] = (model_state, opt_state)
        return metrics["loss"]

    for label in carried:
        timed(lambda: run(label), 2)
    times = {label: [] for label in carried}
    for _ in range(repeats):
        for label in carried:
            times[label] += timed(lambda: run(label), 1)
    leaves = len(jax.tree.leaves((state, opt)))
    return {"approach": name, "rows": rows, "dim": dim, "state_buffers": leaves, "aliased_outputs": aliased,
            "seconds": {label: median(t) for label, t in times.items()}, "load_average": load_average()}


# ----------------------------------------------------------------------------------------------------- matmul


MATMUL_ROWS = (1024, 4096)
MATMUL_IN, MATMUL_OUT = 4096, 512


def jax_matmuls(repeats: int) -> dict:
    """GFLOP/s of X W (forward), X^T G (dW), G W^T (dX), and of all three together, for X [N, 4096], W [4096, 512],
    at N in MATMUL_ROWS; plus the square [4096, 4096]^2."""
    import jax
    import jax.numpy as jnp

    out = {}
    key = jax.random.key(0)
    for n in MATMUL_ROWS:
        x = jax.random.normal(key, (n, MATMUL_IN), jnp.float32)
        w = jax.random.normal(key, (MATMUL_IN, MATMUL_OUT), jnp.float32)
        g = jax.random.normal(key, (n, MATMUL_OUT), jnp.float32)
        cases = {"forward X W": (jax.jit(lambda x, w: x @ w), (x, w)),
                 "dW = X^T G": (jax.jit(lambda x, g: x.T @ g), (x, g)),
                 "dX = G W^T": (jax.jit(lambda g, w: g @ w.T), (g, w)),
                 "forward + dW + dX": (jax.jit(lambda x, w, g: (x @ w, x.T @ g, g @ w.T)), (x, w, g))}
        for label, (fn, args) in cases.items():
            jax.block_until_ready(fn(*args))
            flops = 2 * n * MATMUL_IN * MATMUL_OUT * (3 if "+" in label else 1)
            out[f"{label}, N={n}"] = flops / median(timed(lambda: fn(*args), repeats)) / 1e9
    out["square 4096^2"] = matmul_rate(repeats=repeats) / 1e9
    return out


TORCH_CHILD = r"""
import json, statistics, sys, time, torch
torch.set_num_threads(2)
rows, d_in, d_out, repeats = json.loads(sys.argv[1])
def rate(fn, flops):
    fn(); fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9
out = {}
for n in rows:
    x, w, g = torch.randn(n, d_in), torch.randn(d_in, d_out), torch.randn(n, d_out)
    f = 2 * n * d_in * d_out
    out[f"forward X W, N={n}"] = rate(lambda: x @ w, f)
    out[f"dW = X^T G, N={n}"] = rate(lambda: x.T @ g, f)
    out[f"dX = G W^T, N={n}"] = rate(lambda: g @ w.T, f)
    out[f"forward + dW + dX, N={n}"] = rate(lambda: (x @ w, x.T @ g, g @ w.T), 3 * f)
a = torch.randn(4096, 4096)
out["square 4096^2"] = rate(lambda: a @ a, 2 * 4096 ** 3)
out["torch"] = torch.__version__
print(json.dumps(out))
"""


def torch_matmuls(python: str, repeats: int) -> dict:
    """The same products in torch (2 threads) in a child process of ``python``; {} when it has no torch."""
    done = subprocess.run([python, "-c", TORCH_CHILD, json.dumps([list(MATMUL_ROWS), MATMUL_IN, MATMUL_OUT, repeats])],
                          capture_output=True, text=True)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": done.stderr[-300:]}


# ----------------------------------------------------------------------------------------------------- flags


def flags_child(rows: int, dim: int, repeats: int, approaches: list[str]) -> dict:
    """In a process started with XLA_FLAGS: the square matmul rate and each approach's step-alone median."""
    import bench_train

    out = {"matmul_gflops": matmul_rate() / 1e9, "steps": {}, "compile_seconds": {}}
    for name in approaches:
        step = bench_train.build_step(name, rows, dim)
        timed(step.alone, 1)
        out["steps"][name] = median(timed(step.alone, repeats))
        out["compile_seconds"][name] = step.compile_seconds
    out["load_average"] = load_average()
    return out


def profile_flags(sets: list[str], rows: int, dim: int, repeats: int, approaches: list[str]) -> dict:
    """flags_child under each flag set of ``sets`` (names in FLAG_SETS), one child process each; the default runs
    first and again last ("default (end)"): each set is compared with the median of the two, and their gap is the
    run's noise."""
    out = {}
    for label in [*sets, "default (end)"]:
        key = "default" if label == "default (end)" else label
        env = {**os.environ, **FLAG_SETS[key]}
        if "XLA_FLAGS" in FLAG_SETS[key]:
            own = FLAG_SETS[key]["XLA_FLAGS"]
            env["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS", ""), own]))
        command = [sys.executable, __file__, "--flags-child", "--rows", str(rows), "--dim", str(dim), "--repeats",
                   str(repeats), "--approaches", ",".join(approaches)]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        try:
            out[label] = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out[label] = {"error": done.stderr.strip()[-400:]}
        out[label]["env"] = FLAG_SETS[key]
        print(json.dumps({"flags": label, **out[label]})[:400], flush=True)
    return out


# ----------------------------------------------------------------------------------------------------- the solve


def solves(dim: int, classes: int, repeats: int) -> dict:
    """Milliseconds of the ways to solve the C adversary's ridge system (gram [dim, dim] SPD, rhs [dim, classes]):
    jnp.linalg.solve (what losses/adversarial.py calls: LU + triangular solves), Cholesky (cho_solve), and
    jnp.linalg.inv(gram) @ rhs; with the largest relative error against float64 numpy."""
    import jax
    import jax.numpy as jnp
    import jax.scipy.linalg as linalg
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4 * dim, dim)).astype(np.float32)
    gram = a.T @ a / len(a) + 1e-3 * np.eye(dim, dtype=np.float32)
    rhs = rng.normal(size=(dim, classes)).astype(np.float32)
    exact = np.linalg.solve(gram.astype(np.float64), rhs.astype(np.float64))
    cases = {"jnp.linalg.solve (now)": lambda g, b: jnp.linalg.solve(g, b),
             "Cholesky (cho_factor + cho_solve)": lambda g, b: linalg.cho_solve(linalg.cho_factor(g), b),
             "jnp.linalg.inv(g) @ b": lambda g, b: jnp.linalg.inv(g) @ b}
    out = {}
    for label, fn in cases.items():
        fn = jax.jit(fn)
        result = np.asarray(jax.block_until_ready(fn(gram, rhs)))
        times = timed(lambda: fn(gram, rhs), repeats)
        out[label] = {"ms": 1e3 * median(times), "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times),
                      "relative_error": float(np.abs(result - exact).max() / np.abs(exact).max())}
    return out


def pair_features(rows: int, group_size: int, dim: int, repeats: int) -> dict:
    """Milliseconds of forming approach B's pair products x_i * x_j for the K(K-1)/2 pairs i < j of each block of
    x [rows / K, K, dim], value and gradient, as `ConcatComparator.block_logits` does now (static-index gathers
    ``x[:, i]``, whose gradient is a scatter-add) and with K - 1 static slices (pair (s, s + t) for t >= 1)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    blocks, k = rows // group_size, group_size
    i, j = np.triu_indices(k, k=1)
    x = jax.random.normal(jax.random.key(0), (blocks, k, dim), jnp.float32)

    def slices(x):
        left = jnp.concatenate([jnp.broadcast_to(x[:, s:s + 1], (blocks, k - 1 - s, dim)) for s in range(k - 1)], 1)
        right = jnp.concatenate([x[:, s + 1:] for s in range(k - 1)], 1)
        return left * right

    cases = {"static-index gathers (now)": lambda x: x[:, i] * x[:, j], "static slices": slices}
    out = {}
    for label, pairs in cases.items():
        fn = jax.jit(jax.value_and_grad(lambda x: jnp.sum(pairs(x) ** 2)))
        jax.block_until_ready(fn(x))
        out[label] = 1e3 * median(timed(lambda: fn(x), repeats))
    return out


# ----------------------------------------------------------------------------------------------------- main


QUICK = {"rows": "1024", "repeats": 3, "trace_steps": 2}
FULL = {"rows": "1024,4096", "repeats": 5, "trace_steps": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--approaches", default=",".join(APPROACHES))
    parser.add_argument("--rows", default=None, help=f"batch rows to profile (default {FULL['rows']})")
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--trace-steps", type=int, default=None)
    parser.add_argument("--parts", default="ops,terms,donation,matmul,solve,flags")
    parser.add_argument("--torch-python", default=None,
                        help="a Python with torch for the matmul comparison (default: the reference harness's, "
                             "else this one)")
    parser.add_argument("--quick", action="store_true", help="1,024 rows, fewer repeats and flag sets")
    parser.add_argument("--merge", action="store_true", help="keep the other parts of OUT/profile.json (rerun some)")
    parser.add_argument("--flags-child", action="store_true", help=argparse.SUPPRESS)
    add_output_args(parser)
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    repeats = args.repeats or mode["repeats"]
    rows = [int(r) for r in (args.rows or mode["rows"]).split(",")]
    approaches = args.approaches.split(",")
    if args.flags_child:
        print(json.dumps(flags_child(rows[0], args.dim, repeats, approaches)))
        return
    out = output_dir(args)
    parts = args.parts.split(",")
    info = machine()
    result: dict = {"machine": info, "dim": args.dim, "rows": rows, "repeats": repeats}
    if args.merge and (out / "profile.json").is_file():
        result = json.loads((out / "profile.json").read_text())
        result.setdefault("merged_runs", []).append({"parts": parts, **info})
        info = result["machine"]
    if "ops" in parts:
        result["ops"] = []
        for n in rows:
            for name in approaches:
                result["ops"].append(profile_ops(name, n, args.dim, args.trace_steps or mode["trace_steps"]))
                print(json.dumps({k: v for k, v in result["ops"][-1].items() if k != "top_ops"})[:600], flush=True)
    if "terms" in parts:
        result["terms"] = [profile_terms(name, rows[0], args.dim, repeats) for name in approaches if name in TERMS]
        print(json.dumps(result["terms"])[:800], flush=True)
    if "donation" in parts:
        result["donation"] = [profile_donation(name, rows[0], args.dim, repeats) for name in ("approach_c",)]
        print(json.dumps(result["donation"]), flush=True)
    if "matmul" in parts:
        peer = Path(os.environ.get("CRESCEND_PEER", "/work/peer")) / "venv" / "bin" / "python"
        python = args.torch_python or (str(peer) if peer.exists() else sys.executable)
        result["matmul"] = {"jax": jax_matmuls(repeats), "torch": torch_matmuls(python, repeats),
                            "load_average": load_average()}
        print(json.dumps(result["matmul"]), flush=True)
    if "solve" in parts:
        result["solve"] = solves(128, 128, 30)
        result["pair_features"] = {n: pair_features(n, 8, 256, max(repeats, 5)) for n in rows}
        print(json.dumps([result["solve"], result["pair_features"]]), flush=True)
    if "flags" in parts:
        sets = QUICK_FLAG_SETS if args.quick else tuple(FLAG_SETS)
        result["flags"] = profile_flags(list(sets), rows[0], args.dim, repeats, approaches)
    if args.merge:
        result["merged_runs"][-1]["load_average_end"] = load_average()
    else:
        info["load_average_end"] = load_average()
    (out / "profile.json").write_text(json.dumps(result, indent=1))
    (out / "profile.md").write_text(markdown(result))
    print(f"wrote {out / 'profile.md'} and profile.json")


# ----------------------------------------------------------------------------------------------------- report


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:,.1f}"


def _ops_for(result: dict, name: str, rows: int | None = None) -> list[dict]:
    return [r for r in result.get("ops", []) if r["approach"] == name and (rows is None or r["rows"] == rows)]


def _category_ms(result: dict, name: str, prefix: str) -> list[tuple[int, float, float]]:
    """(rows, ms per step of the categories starting with ``prefix``, share of the thunk time) per profiled size."""
    out = []
    for r in _ops_for(result, name):
        seconds = sum(v for k, v in r["categories"].items() if k.startswith(prefix))
        out.append((r["rows"], 1e3 * seconds, seconds / max(r["thunk_seconds"], 1e-12)))
    return out


def _share(result: dict, names: tuple[str, ...], *prefixes: str) -> float:
    """The largest share of a traced step (over ``names`` and sizes) spent in the categories of ``prefixes``."""
    return max((share for name in names for prefix in prefixes for _, _, share in _category_ms(result, name, prefix)),
               default=0.0)


def _evidence(result: dict, name: str, prefix: str) -> str:
    cells = _category_ms(result, name, prefix)
    return ", ".join(f"{ms:,.1f} ms ({share:.0%}) at {rows:,} rows" for rows, ms, share in cells) or "not profiled"


def _flag_change(result: dict, label: str) -> dict[str, float]:
    """Relative step-time change of each approach under flag set ``label`` against the median of the default
    children (first and last)."""
    flags = result.get("flags", {})
    defaults = [flags.get(k, {}).get("steps", {}) for k in ("default", "default (end)")]
    other = flags.get(label, {}).get("steps", {})
    base = {n: median([d[n] for d in defaults if n in d]) for n in defaults[0]}
    return {name: other[name] / base[name] - 1.0 for name in base if name in other}


def _short(name: str) -> str:
    return name.split("_")[-1].upper() if name.startswith("approach_") else name


def _changes(change: dict[str, float]) -> str:
    return ", ".join(f"{_short(n)} {v:+.0%}" for n, v in change.items())


# What phase 2 did with each item (its before/after measurements: bench/perf_changes.md, bench/ab/*)
PHASE2 = {
    "**C: the adversary's solve.**": "Phase 2 measured it (bench/ab/05: the step without the adversary is 0.84-0.86x "
                                     "by paired ratio under load) and left the solver and the refit as they are.",
    "**Dropout bits.**": "Phase 2 tried rbg keys and 16-bit threefry draws: no whole-step gain beyond the noise "
                         "(bench/ab/02); nnx.Dropout with threefry stays.",
    "**InfoNCE tiles.**": "Phase 2 did (b) (bench/ab/04); one 4,096-row tile to extend it was slower (bench/ab/06); "
                          "(a), (c), (d) are open (each at most a few % of a step here; (d) needs T bounded below "
                          "while T may be learned).",
    "**B: pair features by gathers.**": "Phase 2 did it (bench/ab/01): the time was XLA's transposed copy of each "
                                        "3-D weight gradient's cotangent; the head now runs its products on 2-D "
                                        "rows, slices the pairs and merges W_p, W_d.",
    "**Optimizer.**": "Open: at most 3% of a step, below this machine's noise.",
    "**Layout copies and transposes.**": "Phase 2 removed B's (bench/ab/01).",
}


def _with_status(item: str) -> str:
    """``item`` with what phase 2 did about it appended (`PHASE2`)."""
    status = next((text for title, text in PHASE2.items() if item.startswith(title)), "")
    return f"{item} *{status}*" if status else item


def work_order(result: dict) -> list[str]:
    """The phase-2 list: what to change where, with the time it can take back (computed from ``result``); the code
    changes first, largest measured share of a step first, then flags, donation and the products themselves; each
    with what phase 2 did about it (`PHASE2`)."""
    return [_with_status(item) for item in _work_order(result)]


def _work_order(result: dict) -> list[str]:
    items, ranked = [], []
    solve = result.get("solve", {})
    if solve:
        now = solve["jnp.linalg.solve (now)"]
        best_label, best = min(((k, v) for k, v in solve.items() if k != "jnp.linalg.solve (now)"),
                               key=lambda kv: kv[1]["max_ms"])
        in_step = ", ".join(
            f"{1e3 * sum(v for k, v in r.get('custom_calls', {}).items() if 'adversarial.py' in k):.1f} ms at "
            f"{r['rows']:,} rows" for r in _ops_for(result, "approach_c"))
        faster = best["ms"] < 0.5 * now["ms"]
        ranked.append(_share(result, ("approach_c",), "adversary refit"))
        items.append(
            f"**C: the adversary's solve.** `crescend_jax/losses/adversarial.py`, `least_squares_adversary_loss`: "
            f"`jnp.linalg.solve(gram, ...)` of the [128, 128] ridge system runs as LU and triangular-solve custom "
            f"calls; in C's traced step they took {in_step or 'not profiled'} (the whole refit: "
            f"{_evidence(result, 'approach_c', 'adversary refit')}). Alone it took {now['ms']:.2f} ms median "
            f"({now['min_ms']:.2f}-{now['max_ms']:.2f}), {best_label} {best['ms']:.2f} ms "
            f"({best['min_ms']:.2f}-{best['max_ms']:.2f}; relative error {best['relative_error']:.0e}). "
            + (f"Replace the solve by {best_label} (the gram is symmetric positive definite with the ridge) and "
               "check tests/test_adversarial.py; expected gain: the custom calls' time in the step less the "
               "alternative's." if faster else
               "The forms cost the same alone: a [128, 128] system is microseconds of arithmetic, and what the step "
               "pays is the hand-off of a tiny operation to XLA's thread pool, which on a loaded machine waits "
               "for a time slice (all three forms alike). Rerun quiet before changing it; if it persists, fit "
               "the adversary every few steps (the moments change slowly) rather than change the solver."))
    rbg = next((label for label in result.get("flags", {}) if label.startswith("PRNG")), None)
    change = _flag_change(result, rbg) if rbg else {}
    ranked.append(_share(result, APPROACHES, "dropout"))
    items.append(
        "**Dropout bits.** `crescend_jax/models/functions.py`, the `create` closure that builds "
        "`nnx.Rngs(params=key, dropout=...)`: the dropout stream is a threefry key, and generating a [B, 512] mask costs ~20 integer operations per 32 bits on CPU. Key the "
        "dropout stream with `jax.random.key(seed, impl=\"unsafe_rbg\")` (or \"rbg\") -- the parameters can keep "
        "threefry. Dropout time (RNG and masks): "
        + "; ".join(f"{_short(n)} {_evidence(result, n, 'dropout')}" for n in APPROACHES
                    if _ops_for(result, n))
        + (". Whole-step change with JAX_DEFAULT_PRNG_IMPL=unsafe_rbg (flags table): "
           + _changes(change) if change else "")
        + ". Check that a seed still reproduces a run bit for bit (tests/test_trainer.py).")
    ranked.append(_share(result, APPROACHES, "InfoNCE", "matmul in a loss (infonce"))
    items.append(
        "**InfoNCE tiles.** `crescend_jax/losses/infonce.py`: (a) `_forward_tile` reduces a [bq, bk] boolean "
        "positive mask to float per tile for `pos_count` and `pos_sum`; both follow from the group ids alone "
        "(segment counts, and z_i . sum_{j in g(i)} z_j - |z_i|^2 in O(B E)): compute them once in "
        "`_local_forward` and keep only the log-sum-exp (and `pos_max` for the top-1 diagnostic) in the tiles; "
        "(b) `_backward_tile` recomputes s = q k^T and two exponentials per tile: when the batch is one tile "
        "(B <= block_size: every A and C step up to 2,048 rows on CPU) save exp(s - lse) as a residual of "
        "`_infonce_fwd` and skip the second product; (c) H_ij = G_ij + G_ji is symmetric: on one device visit only "
        "tiles j >= i in `_backward_pass` and add H^T k for the mirror (half the backward tiles); (d) the rows are "
        "unit vectors, so s <= 1/T: for T >= 0.05 the tiles' log-sum-exp can use the fixed shift 1/T (no running "
        "max and rescaling: one pass over each tile instead of two). InfoNCE "
        f"non-matmul time: A {_evidence(result, 'approach_a', 'InfoNCE')}; C "
        f"{_evidence(result, 'approach_c', 'InfoNCE')}; its products: A "
        f"{_evidence(result, 'approach_a', 'matmul in a loss (infonce')}. (a)+(b) can take back most of the "
        "non-matmul time and half the loss products at <= 2,048 rows.")
    if _ops_for(result, "approach_b"):
        ranked.append(_share(result, ("approach_b",), "comparison head", "matmul: comparison head"))
        items.append(
            "**B: pair features by gathers.** `crescend_jax/models/comparators.py`, `ConcatComparator.block_logits` "
            "and `PairMLP.antisymmetric` index z, W_a z and W_b z with static pair indices (`z[:, i]`: gathers of "
            "[P, 28, E] copies) and `_tile_from_upper` fills the tile by a gather of a concatenation. Form the "
            "joint term on the broadcast K x K tile instead ([P, K, 1, E] against [P, 1, K, E]: 64 entries for 28 "
            "pairs, no gather), take logits = finish(...) - its transpose over (i, j), or split the pairs into "
            "K - 1 static slices (i, i + s); measure both. Pair-head elementwise time (gathers, pair features, "
            f"tile): {_evidence(result, 'approach_b', 'comparison head')}; head products: "
            f"{_evidence(result, 'approach_b', 'matmul: comparison head')}"
            + "".join(f"; the product features x_i * x_j alone, value and gradient at {int(n):,} rows: "
                      f"{v['static-index gathers (now)']:.1f} ms by gathers, {v['static slices']:.1f} ms by slices"
                      for n, v in result.get("pair_features", {}).items())
            + ". The head's two products W_p (xa * xb) and W_d |xa - xb| can be one product of the concatenated "
              "[P * 28, 2 E] features with [W_p; W_d].")
    ranked.append(_share(result, APPROACHES, "optimizer"))
    items.append(
        "**Optimizer.** `crescend_jax/train/optimizer.py`, `build_optimizer`: AdamW runs leaf by leaf (a few "
        "fusions per parameter, ~20 leaves per model, plus the gradient norm in `train/step.py`); wrapping the "
        "default transform in `optax.flatten` updates one concatenated vector instead. Optimizer time: "
        + "; ".join(f"{_short(n)} {_evidence(result, n, 'optimizer')}" for n in APPROACHES
                    if _ops_for(result, n)) + ". Gain: part of that (the concatenation copies all parameters).")
    copies = [(r["approach"], r["rows"], op) for r in result.get("ops", []) for op in r["top_ops"]
              if op["category"].startswith("layout")]
    ranked.append(_share(result, APPROACHES, "layout"))
    items.append(
        "**Layout copies and transposes.** "
        + ("; ".join(f"{_short(a)} {rows:,}: `{op['op']}` {_ms(op['seconds'])} ms "
                     f"({op['source'] or 'XLA-inserted, no source line'})" for a, rows, op in copies[:6])
           if copies else "none among the top operations")
        + ". Total per approach: "
        + "; ".join(f"{_short(n)} {_evidence(result, n, 'layout')}" for n in APPROACHES
                    if _ops_for(result, n))
        + ". Where a copy transposes a kernel for the backward product, store the kernel as the product reads it "
          "or let dot_general contract the other dimension (no explicit `.T`).")
    items = [item for _, item in sorted(zip(ranked, items), key=lambda pair: -pair[0])]
    flags = result.get("flags", {})
    helpful = []
    for label in flags:
        if label.startswith(("default", "PRNG")):
            continue
        change = _flag_change(result, label)
        if change and max(change.values()) < -0.03:
            helpful.append((label, change))
    if not flags:
        items.append("**XLA CPU flags.** Not measured in this run (`--parts flags`).")
    elif helpful:
        items.append("**XLA CPU flags.** Every approach faster with: " + "; ".join(
            f"`{flags[label]['env'].get('XLA_FLAGS', '')}` ({_changes(change)})" for label, change in helpful)
            + ": set it where the runtime builds XLA_FLAGS (`crescend_jax/runtime/`) once a rerun in a quiet window "
              "confirms it.")
    else:
        items.append("**XLA CPU flags.** No flag set in the table speeds up every approach by more than 3%: keep "
                     "the defaults.")
    donation = result.get("donation", [])
    if donation:
        d = donation[0]
        items.append(
            f"**Donation.** The trainer's step donates the model and optimizer state: {d['aliased_outputs']} of its "
            f"outputs alias an input buffer ({d['state_buffers']} state buffers); C at {d['rows']:,} rows: "
            f"{_ms(d['seconds']['donated'])} ms donated, {_ms(d['seconds']['not donated'])} ms not. Nothing more to "
            "take back here unless the two differ.")
    matmul = result.get("matmul", {})
    jax_rates, torch_rates = matmul.get("jax", {}), matmul.get("torch", {})
    shared = [k for k in jax_rates if isinstance(torch_rates.get(k), float)]
    if shared:
        ratio = {k: jax_rates[k] / torch_rates[k] for k in shared}
        level = all(v >= 0.9 for k, v in ratio.items() if "forward + dW + dX" in k)
        items.append(
            "**The products themselves.** On the first layer's shapes XLA's dot (YNNPACK) runs at "
            + ", ".join(f"{ratio[k]:.0%}" for k in shared if "forward + dW + dX" in k)
            + " of torch's (MKL) rate for forward + dW + dX at N = "
            + " / ".join(k.split("N=")[1] for k in shared if "forward + dW + dX" in k)
            + f" rows (the square 4096^2: {ratio.get('square 4096^2', float('nan')):.0%}). "
            + ("About level on the step's own shapes: the gap to the reference at equal FLOPs per encoded "
               "performance is the work outside the products (items above). " if level else
               "The reference's eager steps start with faster products on these shapes: B and C can pass it only "
               "by removing work outside the products (items above), by bf16, or with a faster dot (the flags "
               "table's oneDNN row). ")
            + "Targets read against JAX's own rate (% matmul in train.md).")
    return items


def markdown(result: dict) -> str:
    info = result["machine"]
    lines = [
        "# Where each training step's time goes (`scripts/bench_profile.py`)",
        "",
        f"{info['date']}, {info['cpu']}, {info['cores']} cores, jax {info['jax']}, XLA_FLAGS "
        f"`{info['xla_flags'] or '(none)'}`; input width {result['dim']:,}; each approach's own config. "
        f"{load_note(info)} Times under load are inflated; shares within one traced step are the figures to read.",
    ]
    for run in result.get("merged_runs", []):  # parts rerun later with --merge: their own date and load
        end = run.get("load_average_end", ["?"])[0]
        lines += ["", f"**Rerun {run['date']}** (`--merge`, load {run['load_average_start'][0]}-{end}): "
                      f"{', '.join(run['parts'])}; the other parts are the run above's."]
    if result.get("ops"):
        lines += ["", "## Per-operation profile (jax.profiler trace of the step alone)", "",
                  "Per step: the wall time (untraced median), and each category's summed XLA thunk time with its "
                  "share of all thunk time. Matrix products are the `matmul:` rows.", ""]
        cats = sorted({c for r in result["ops"] for c in r["categories"]},
                      key=lambda c: -max(r["categories"].get(c, 0) for r in result["ops"]))
        header = [f"{r['approach'].split('_')[-1].upper() if r['approach'] != 'baseline' else 'baseline'} "
                  f"{r['rows']:,}" for r in result["ops"]]
        lines += ["| ms per step | " + " | ".join(header) + " |", "|---|" + "---|" * len(header),
                  "| **wall (untraced)** | " + " | ".join(f"**{_ms(r['wall_seconds'])}**" for r in result["ops"])
                  + " |",
                  "| sum of thunks | " + " | ".join(_ms(r["thunk_seconds"]) for r in result["ops"]) + " |"]
        for c in cats:
            lines.append(f"| {c} | " + " | ".join(
                f"{_ms(r['categories'].get(c, 0.0))} ({r['categories'].get(c, 0.0) / r['thunk_seconds']:.0%})"
                for r in result["ops"]) + " |")
        matmul_share = [sum(v for k, v in r["categories"].items() if k.startswith("matmul")) / r["thunk_seconds"]
                        for r in result["ops"]]
        lines.append("| **outside the products** | " + " | ".join(f"**{1 - s:.0%}**" for s in matmul_share) + " |")
        for r in result["ops"]:
            lines += ["", f"Top operations, {r['approach']} at {r['rows']:,} rows (ms per step, source line):", ""]
            lines += [f"- `{op['op']}` {_ms(op['seconds'])} ({op['category']}; {op['source'] or 'no source line'})"
                      for op in r["top_ops"][:10]]
    if result.get("terms"):
        lines += ["", "## Loss terms switched off (step alone, interleaved medians)", "",
                  "| approach | rows | variant | ms per step | change | matmul GFLOP |", "|---|---|---|---|---|---|"]
        for t in result["terms"]:
            full = t["seconds"]["full step"]
            for label, seconds in t["seconds"].items():
                lines.append(f"| {t['approach']} | {t['rows']:,} | {label} | {_ms(seconds)} | "
                             f"{seconds / full - 1:+.0%} | {t['matmul_flops'][label] / 1e9:.2f} |")
    if result.get("donation"):
        lines += ["", "## Buffer donation", ""]
        for d in result["donation"]:
            lines.append(f"{d['approach']} at {d['rows']:,} rows: {d['aliased_outputs']} outputs alias a donated "
                         f"input ({d['state_buffers']} state buffers); step {_ms(d['seconds']['donated'])} ms "
                         f"donated, {_ms(d['seconds']['not donated'])} ms without donation.")
    matmul = result.get("matmul")
    if matmul:
        torch_rates = matmul.get("torch", {})
        lines += ["", "## The products alone: JAX (XLA CPU) against torch (2 threads)", "",
                  f"X [N, 4096], W [4096, 512] (the first layer at the reference's width), G [N, 512]; torch "
                  f"{torch_rates.get('torch', '?')} in a child process. GFLOP/s, medians; load "
                  f"{matmul.get('load_average')}.", "",
                  "| product | JAX | torch | JAX / torch |", "|---|---|---|---|"]
        for key, value in matmul["jax"].items():
            other = torch_rates.get(key)
            lines.append(f"| {key} | {value:.0f} | "
                         + (f"{other:.0f} | {value / other:.0%} |" if isinstance(other, float) else "- | - |"))
        if "error" in torch_rates:
            lines.append(f"\ntorch failed: {torch_rates['error']}")
    if result.get("pair_features"):
        lines += ["", "## B's pair features alone (x_i * x_j for the 28 pairs of each block of 8, value and gradient)",
                  "", "| rows | static-index gathers (now) ms | static slices ms |", "|---|---|---|"]
        lines += [f"| {int(n):,} | {v['static-index gathers (now)']:.1f} | {v['static slices']:.1f} |"
                  for n, v in result["pair_features"].items()]
    if result.get("solve"):
        lines += ["", "## C's ridge solve alone ([128, 128] system, 128 right-hand sides)", "",
                  "30 calls each; a wide spread is the load (the solvers' threads wait for each other).", "",
                  "| method | median ms | min ms | max ms | relative error |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v['ms']:.3f} | {v['min_ms']:.3f} | {v['max_ms']:.3f} | {v['relative_error']:.1e} |"
                  for k, v in result["solve"].items()]
    flags = result.get("flags")
    if flags:
        names = sorted({n for f in flags.values() for n in f.get("steps", {})})
        lines += ["", f"## XLA CPU flags (a child process each; step alone at {result['rows'][0]:,} rows)", "",
                  "Each setting is compared with the median of the two default children (first and last); their own "
                  "gap (the default rows' change column) is this run's noise.", "",
                  "| setting | environment | matmul GFLOP/s | " + " | ".join(f"{n} ms" for n in names)
                  + " | change vs default | load |", "|---|---|---|" + "---|" * len(names) + "---|---|"]
        for label, f in flags.items():
            if "error" in f:
                lines.append(f"| {label} | `{f['env']}` | failed: {f['error'][-120:]} |")
                continue
            change = _flag_change(result, label)
            lines.append(f"| {label} | `{' '.join(f'{k}={v}' for k, v in f['env'].items()) or '-'}` | "
                         f"{f['matmul_gflops']:.0f} | " + " | ".join(_ms(f["steps"].get(n, float("nan")))
                                                              for n in names)
                         + " | " + ", ".join(f"{v:+.0%}" for v in change.values()) + f" | {f['load_average'][0]} |")
    lines += ["", "## Work order for phase 2 (each gain is bounded by the measured time of what it removes)", "",
              "Code changes first, the largest measured share of a traced step first; then flags, donation and the "
              "products themselves.", ""]
    lines += [f"{i}. {item}" for i, item in enumerate(work_order(result), 1)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
