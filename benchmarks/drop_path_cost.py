"""What a default verify_drop_path costs on a (32, 16, 14, 14) float32 input (issue 31: about 10 s
or less on 2 cores), as a ratio to plainly drawing the same elements (uniforms of the input's
shape, as many as the run's elements, with the backend's generator), and to the same number of
calls of the function itself, nothing read.

    python benchmarks/drop_path_cost.py [torch threads]   # timm drop_path (row), torchvision batch, numpy

torch's intra-op threads compete with the battery's worker thread for the cores: on a loaded
2-core machine a run with torch's default threads took 10x longer than with
``torch.set_num_threads(1)``; the optional argument sets it.
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
import structured_corpus_drop_path as corpus  # noqa: E402
from _timing import machine  # noqa: E402

import dropout_stats as ds  # noqa: E402

SHAPE = (32, 16, 14, 14)


def plain(fn, calls, stateful, backend):
    x_np = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    if backend == "torch":
        import torch

        x = torch.from_numpy(x_np)
        for _ in range(calls):
            fn(x, 0.2)
    else:
        for i in range(calls):
            fn(x_np, 0.2, (0, i))


def draw(samples, backend):
    """Uniforms of SHAPE until ``samples`` elements are drawn."""
    n = int(np.prod(SHAPE))
    if backend == "torch":
        import torch

        for _ in range(samples // n):
            torch.rand(SHAPE)
    else:
        rng = np.random.default_rng(0)
        for _ in range(samples // n):
            rng.random(SHAPE, dtype=np.float32)


def main(rounds=3):
    if len(sys.argv) > 1:
        import torch

        torch.set_num_threads(int(sys.argv[1]))
    print(machine(), "torch threads:", sys.argv[1] if len(sys.argv) > 1 else "default")
    cases = [
        ("timm drop_path, mode row (default)", corpus.timm_drop_path, {"stateful": True}, "torch"),
        (
            "torchvision stochastic_depth, mode batch",
            corpus.torchvision_fn("batch"),
            {"stateful": True, "mode": "batch"},
            "torch",
        ),
        ("numpy stateless, mode row", corpus.numpy_stateless, {}, "numpy"),
    ]
    for name, build, kw, backend in cases:
        tv, tp, td = [], [], []
        for _ in range(rounds):
            fn = build()
            t0 = time.perf_counter()
            report = ds.verify_drop_path(fn, 0.2, SHAPE, **kw)
            tv.append(time.perf_counter() - t0)
            calls = next(f for f in report.findings if f.name == "drop_path_design").value["calls"]
            t0 = time.perf_counter()
            plain(fn, calls, kw.get("stateful", False), backend)
            tp.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            draw(report.samples, backend)
            td.append(time.perf_counter() - t0)
        v, p, d = statistics.median(tv), statistics.median(tp), statistics.median(td)
        print(
            f"{name}: verify {v:.2f} s ({calls:,} calls, {report.samples:,} elements, passed={report.passed}); "
            f"drawing as many uniforms {d:.2f} s: ratio {v / d:.1f}; the same calls of fn {p:.2f} s: ratio {v / p:.1f}"
        )


if __name__ == "__main__":
    main()
