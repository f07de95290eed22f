"""BatchNorm2d, softmax/log_softmax, cross-entropy, smooth L1, MSE and embedding (float32).

Each case saves its inputs (<case>__x<i>, int64 targets/indices included), <case>__out, the random
<case>__grad_out used for the backward and <case>__grad_x<i> for the inputs that get a gradient.
BatchNorm cases also save the running statistics before (<case>__rm_in, __rv_in) and after
(<case>__rm_out, __rv_out) the forward. Paddle's BN running-statistics rule has no torch op: the C++
test checks it against the formula in double.
"""
import torch
import torch.nn.functional as F

from generate import save


def _backward(out, name, y, leaves, seed):
    g = torch.Generator().manual_seed(seed)
    gy = torch.rand(y.shape, generator=g, dtype=y.dtype) + 0.5
    y.backward(gy)
    save(out, f"{name}__out", y)
    save(out, f"{name}__grad_out", gy)
    for i, t in enumerate(leaves):
        if t is not None and t.grad is not None:
            save(out, f"{name}__grad_x{i}", t.grad)


def _case(out, name, fn, inputs, grads, seed=0):
    """inputs: tensors (saved as x<i>); grads: which ones require grad."""
    leaves = []
    for i, (t, rg) in enumerate(zip(inputs, grads)):
        save(out, f"{name}__x{i}", t)
        leaves.append(t.clone().requires_grad_(rg))
    y = fn(*leaves)
    _backward(out, name, y, leaves, seed)


def _batch_norm(out):
    shape = (4, 3, 5, 6)
    x = torch.randn(*shape) * 2.0 + 0.5
    w = torch.rand(3) + 0.5
    b = torch.randn(3)
    rm = torch.randn(3) * 0.1
    rv = torch.rand(3) + 0.5
    for name, training in (("bn_train", True), ("bn_eval", False)):
        rm_c, rv_c = rm.clone(), rv.clone()
        save(out, f"{name}__rm_in", rm_c)
        save(out, f"{name}__rv_in", rv_c)
        leaves = [x.clone().requires_grad_(True), w.clone().requires_grad_(True), b.clone().requires_grad_(True)]
        for i, t in enumerate(leaves):
            save(out, f"{name}__x{i}", t)
        y = F.batch_norm(leaves[0], rm_c, rv_c, leaves[1], leaves[2], training=training, momentum=0.1, eps=1e-5)
        save(out, f"{name}__rm_out", rm_c)
        save(out, f"{name}__rv_out", rv_c)
        _backward(out, name, y, leaves, seed=1)
    # affine=False, track_running_stats=False: batch statistics, no parameters, no buffers
    xa = (torch.randn(3, 4, 3, 5) * 0.5 - 1.0).requires_grad_(True)
    save(out, "bn_noaffine__x0", xa)
    y = F.batch_norm(xa, None, None, None, None, training=True, momentum=0.1, eps=1e-5)
    _backward(out, "bn_noaffine", y, [xa], seed=2)
    # affine=False with running statistics, eval
    rm2, rv2 = torch.randn(4) * 0.2, torch.rand(4) + 0.5
    save(out, "bn_eval_noaffine__rm_in", rm2)
    save(out, "bn_eval_noaffine__rv_in", rv2)
    xe = torch.randn(3, 4, 3, 5).requires_grad_(True)
    save(out, "bn_eval_noaffine__x0", xe)
    y = F.batch_norm(xe, rm2, rv2, None, None, training=False, eps=1e-5)
    _backward(out, "bn_eval_noaffine", y, [xe], seed=3)


def _softmax(out):
    for dim, tag in ((1, "d1"), (-1, "dm1")):
        x = torch.randn(3, 5, 7) * 3.0
        _case(out, f"softmax_{tag}", lambda t, d=dim: torch.softmax(t, d), [x], [True], seed=4)
        _case(out, f"log_softmax_{tag}", lambda t, d=dim: torch.log_softmax(t, d), [x], [True], seed=5)
    # a long row (a CAN vocabulary-sized decoder output) and a large dynamic range
    x = torch.randn(6, 113) * 8.0
    _case(out, "log_softmax_vocab", lambda t: torch.log_softmax(t, -1), [x], [True], seed=6)


def _cross_entropy(out):
    N, C = 16, 9
    logits = torch.randn(N, C) * 2.0
    # CAN pads targets with 0 and ignores them
    target = torch.randint(1, C, (N,), dtype=torch.int64)
    target[[2, 5, 11, 15]] = 0
    weight = torch.rand(C) + 0.5
    for red in ("mean", "sum", "none"):
        _case(out, f"ce_ignore0_{red}", lambda x, t, r=red: F.cross_entropy(x, t, ignore_index=0, reduction=r),
              [logits, target], [True, False], seed=7)
        _case(out, f"ce_weight_{red}",
              lambda x, t, r=red: F.cross_entropy(x, t, weight=weight, ignore_index=0, reduction=r),
              [logits, target], [True, False], seed=8)
    save(out, "ce_weight__weight", weight)
    # default ignore_index = -100 with a -100 entry, no weights
    t2 = torch.randint(0, C, (N,), dtype=torch.int64)
    t2[3] = -100
    _case(out, "ce_default_mean", lambda x, t: F.cross_entropy(x, t), [logits, t2], [True, False], seed=9)
    # every entry ignored: mean is 0/0 = NaN, the gradient is zero
    t3 = torch.zeros(N, dtype=torch.int64)
    _case(out, "ce_all_ignored_mean", lambda x, t: F.cross_entropy(x, t, ignore_index=0), [logits, t3],
          [True, False], seed=10)


def _regression(out):
    x = torch.randn(5, 7) * 1.5
    t = torch.randn(5, 7)
    for red in ("none", "mean", "sum"):
        for beta, tag in ((1.0, "b1"), (0.5, "b05")):
            _case(out, f"smooth_l1_{tag}_{red}",
                  lambda a, b, r=red, be=beta: F.smooth_l1_loss(a, b, reduction=r, beta=be),
                  [x, t], [True, True], seed=11)
        _case(out, f"mse_{red}", lambda a, b, r=red: F.mse_loss(a, b, reduction=r), [x, t], [True, True], seed=12)


def _embedding(out):
    w = torch.randn(10, 6)
    idx = torch.tensor([[1, 0, 3, 3, 9], [0, 2, 3, 7, 1], [4, 4, 4, 0, 0]], dtype=torch.int64)
    _case(out, "embedding_pad0", lambda ww, i: F.embedding(i, ww, padding_idx=0), [w, idx], [True, False], seed=13)
    _case(out, "embedding_nopad", lambda ww, i: F.embedding(i, ww), [w, idx], [True, False], seed=14)


def generate(out):
    _batch_norm(out)
    _softmax(out)
    _cross_entropy(out)
    _regression(out)
    _embedding(out)
