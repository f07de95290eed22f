#!/usr/bin/env python3
"""PyTorch counterpart of bench/bench_conv.cpp: CAN's dense-block 3x3 conv (96 -> 24, pad 1, bias) on a
float32 (8, 96, 30, 120) batch, forward and forward + backward (grads for x, w, b), 2 threads, warm-up
excluded, median of N runs. Prints {"fwd_bwd_ms": ..., "fwd_ms": ..., "threads": ...}.

Usage: /usr/bin/python3 tools/bench_conv_torch.py [runs=20]
"""
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def main() -> int:
    runs = max(1, int(sys.argv[1])) if len(sys.argv) > 1 else 20
    warmup = 2
    torch.set_num_threads(2)
    torch.manual_seed(0)
    bound = 1.0 / (96 * 9) ** 0.5
    x = (torch.rand(8, 96, 30, 120) * 2 - 1).requires_grad_()
    w = ((torch.rand(24, 96, 3, 3) * 2 - 1) * bound).requires_grad_()
    b = ((torch.rand(24) * 2 - 1) * bound).requires_grad_()
    gy = torch.rand(8, 24, 30, 120) * 2 - 1
    fwd, fwd_bwd = [], []
    for i in range(warmup + runs):
        for t in (x, w, b):
            t.grad = None
        t0 = time.perf_counter()
        y = F.conv2d(x, w, b, stride=1, padding=1)
        f = (time.perf_counter() - t0) * 1e3
        y.backward(gy)
        fb = (time.perf_counter() - t0) * 1e3
        if i >= warmup:
            fwd.append(f)
            fwd_bwd.append(fb)
    print(json.dumps({"fwd_bwd_ms": round(statistics.median(fwd_bwd), 3), "fwd_ms": round(statistics.median(fwd), 3),
                      "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
