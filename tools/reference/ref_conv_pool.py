"""conv2d, max_pool2d and avg_pool2d (float32): outputs and gradients of every input.

The case tables are mirrored in tests/test_conv_pool.cpp; each case also saves its options as an
int64 __opts array so the C++ test can check that the two tables agree.
"""
import torch
import torch.nn.functional as F

from generate import save

# name, x shape, out channels, kernel, stride, padding, dilation, bias
CONV_CASES = [
    ("k3p1", (2, 5, 9, 11), 4, (3, 3), (1, 1), (1, 1), (1, 1), True),
    ("stem7s2", (2, 1, 33, 47), 6, (7, 7), (2, 2), (3, 3), (1, 1), False),  # CAN's DenseNet stem
    ("cov11", (2, 1, 13, 17), 5, (11, 11), (1, 1), (5, 5), (1, 1), True),  # CAN's coverage conv
    ("k1", (2, 6, 5, 7), 3, (1, 1), (1, 1), (0, 0), (1, 1), False),  # pointwise: no im2col
    ("k1s2_n3", (3, 4, 7, 9), 5, (1, 1), (2, 2), (0, 0), (1, 1), True),  # 1x1 but strided; odd batch
    ("dil2", (2, 3, 10, 12), 4, (3, 3), (1, 1), (2, 2), (2, 2), True),
    ("k5s2", (2, 3, 11, 14), 4, (5, 5), (2, 2), (1, 1), (1, 1), True),
    ("asym", (2, 3, 9, 13), 4, (3, 5), (1, 2), (1, 2), (2, 1), True),
    ("single", (1, 4, 6, 8), 3, (3, 3), (1, 1), (1, 1), (1, 1), True),  # N == 1 path
    ("dense96", (2, 96, 6, 10), 24, (3, 3), (1, 1), (1, 1), (1, 1), False),  # CAN's bottleneck conv2: K = 864
]

# name, kind, x shape, kernel, stride, padding, ceil_mode, count_include_pad
POOL_CASES = [
    ("avg2_ceil", "avg", (2, 3, 7, 9), (2, 2), (2, 2), (0, 0), True, True),  # CAN's transition layer
    ("max2_ceil", "max", (2, 3, 7, 9), (2, 2), (2, 2), (0, 0), True, True),  # CAN's stem pool
    ("max3s2p1_ceil", "max", (2, 3, 8, 11), (3, 3), (2, 2), (1, 1), True, True),
    ("max3s2p1", "max", (2, 3, 8, 11), (3, 3), (2, 2), (1, 1), False, True),
    ("avg3s2p1_ceil_incl", "avg", (2, 3, 8, 11), (3, 3), (2, 2), (1, 1), True, True),
    ("avg3s2p1_ceil_excl", "avg", (2, 3, 8, 11), (3, 3), (2, 2), (1, 1), True, False),
    ("avg3s2p1_incl", "avg", (2, 3, 8, 11), (3, 3), (2, 2), (1, 1), False, True),
    # H = 5: the ceil-mode window that would start in the right padding is dropped (3 rows, not 4).
    ("max2s2p1_ceil", "max", (2, 2, 5, 6), (2, 2), (2, 2), (1, 1), True, True),
    ("avg2s2p1_ceil_incl", "avg", (2, 2, 5, 6), (2, 2), (2, 2), (1, 1), True, True),
    ("avg2s2p1_ceil_excl", "avg", (2, 2, 5, 6), (2, 2), (2, 2), (1, 1), True, False),
]


def _conv(out, name, xs, o, k, stride, padding, dilation, has_bias):
    fan_in = xs[1] * k[0] * k[1]
    x = torch.randn(*xs).requires_grad_()
    w = (torch.randn(o, xs[1], *k) / fan_in ** 0.5).requires_grad_()
    b = torch.randn(o).requires_grad_() if has_bias else None
    y = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
    gy = torch.randn(y.shape)
    y.backward(gy)
    save(out, f"{name}__opts", torch.tensor([*stride, *padding, *dilation], dtype=torch.int64))
    save(out, f"{name}__x", x)
    save(out, f"{name}__w", w)
    save(out, f"{name}__out", y)
    save(out, f"{name}__grad_out", gy)
    save(out, f"{name}__grad_x", x.grad)
    save(out, f"{name}__grad_w", w.grad)
    if b is not None:
        save(out, f"{name}__b", b)
        save(out, f"{name}__grad_b", b.grad)


def _pool(out, name, kind, xs, k, stride, padding, ceil_mode, count_include_pad):
    # Distinct values (a permutation of an even grid): no max-pool ties, so the argmax is unambiguous.
    n = 1
    for d in xs:
        n *= d
    x = ((torch.randperm(n).to(torch.float32) + 0.5) / n * 4 - 2).reshape(xs).requires_grad_()
    if kind == "max":
        y = F.max_pool2d(x, k, stride, padding, ceil_mode=ceil_mode)
    else:
        y = F.avg_pool2d(x, k, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    gy = torch.randn(y.shape)
    y.backward(gy)
    opts = [*k, *stride, *padding, int(ceil_mode), int(count_include_pad)]
    save(out, f"{name}__opts", torch.tensor(opts, dtype=torch.int64))
    save(out, f"{name}__x", x)
    save(out, f"{name}__out", y)
    save(out, f"{name}__grad_out", gy)
    save(out, f"{name}__grad_x", x.grad)


def generate(out):
    for case in CONV_CASES:
        _conv(out, *case)
    for case in POOL_CASES:
        _pool(out, *case)
