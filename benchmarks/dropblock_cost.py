"""What a default verify_dropblock costs on a (32, 16, 14, 14) float32 input (issue 31: about 10 s
or less on 2 cores), as a ratio to plainly drawing the same elements (torch.rand of the input's
shape, as many elements as the run's) and to the same number of calls of the function itself.

    python benchmarks/dropblock_cost.py

Two functions: torchvision's drop_block2d (valid centres, a mask per channel: 512 independent
maps per call) and timm's DropBlock2d module (centres anywhere, channels sharing a mask: 32 maps
per call, so more calls).  Median of three runs each.
"""

import statistics
import time

import torch
from _timing import machine

import dropout_stats as ds
from dropout_stats.adapters._torchvision_import import import_torchvision

SHAPE = (32, 16, 14, 14)
REPEAT = 3


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def main():
    import_torchvision()
    import timm.layers
    import torchvision.ops

    def tv(x, rate):
        return torchvision.ops.drop_block2d(x, rate, 7, training=True)

    def timm_layer(rate, seed):
        torch.manual_seed(seed)
        return timm.layers.DropBlock2d(rate, 7)

    timm_variant = dict(centres="all", shared_across_channels=True, block_clip="per_axis", even="asymmetric", eps=1e-7)
    cases = [
        ("torchvision drop_block2d", lambda s: ds.verify_dropblock(tv, 0.1, 7, SHAPE, stateful=True, seed=s), tv),
        (
            "timm DropBlock2d",
            lambda s: ds.verify_dropblock(timm_layer, 0.1, 7, SHAPE, layer=True, seed=s, **timm_variant),
            lambda x, rate: timm_layer(rate, 0).train()(x),
        ),
    ]
    print(f"machine: {machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    x = torch.ones(SHAPE)
    for name, run, fn in cases:
        runs = [timed(lambda s=s, run=run: run(s)) for s in range(REPEAT)]
        wall = statistics.median(t for t, _ in runs)
        elements = int(statistics.median(r.samples for _, r in runs))
        calls = -(-elements // x.numel())
        draw, _ = timed(lambda calls=calls: [torch.rand(SHAPE) for _ in range(calls)])
        alone, _ = timed(lambda calls=calls, fn=fn: [fn(x, 0.1) for _ in range(calls)])
        passed = all(r.passed for _, r in runs)
        print(
            f"{name}: verify_dropblock {wall:.2f} s (median of {REPEAT}, passed {passed}), {calls} calls' elements; "
            f"torch.rand of them {draw:.2f} s (ratio {wall / draw:.0f}); "
            f"fn alone {alone:.2f} s (ratio {wall / alone:.1f})"
        )


if __name__ == "__main__":
    main()
