"""Element-wise ops, broadcasting arithmetic, reductions, matmul/linear, cat/stack (float32)."""
import torch
import torch.nn.functional as F

from generate import save


def _case(out, name, fn, inputs, seed=0):
    """Runs fn on leaf copies of inputs, backprops a random grad_out, saves x_i, out, grad_out, grad_x_i."""
    g = torch.Generator().manual_seed(seed)
    leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    y = fn(*leaves)
    gy = torch.rand(y.shape, generator=g, dtype=y.dtype) + 0.5
    y.backward(gy)
    for i, t in enumerate(leaves):
        save(out, f"{name}__x{i}", t)
        if t.grad is not None:
            save(out, f"{name}__grad_x{i}", t.grad)
    save(out, f"{name}__out", y)
    save(out, f"{name}__grad_out", gy)


def generate(out):
    r = lambda *s: torch.randn(*s)
    pos = torch.rand(4, 5) + 0.1
    _case(out, "exp", torch.exp, [r(4, 5)])
    _case(out, "log", torch.log, [pos])
    _case(out, "sqrt", torch.sqrt, [pos])
    _case(out, "square", torch.square, [r(4, 5)])
    _case(out, "abs", torch.abs, [r(4, 5)])
    _case(out, "pow3", lambda x: torch.pow(x, 3.0), [r(4, 5)])
    _case(out, "pow_half", lambda x: torch.pow(x, 0.5), [pos])
    _case(out, "neg", torch.neg, [r(4, 5)])
    _case(out, "relu", torch.relu, [r(4, 5)])
    _case(out, "sigmoid", torch.sigmoid, [r(4, 5) * 4])
    _case(out, "tanh", torch.tanh, [r(4, 5) * 2])
    # Keras 3 hard_sigmoid is torch's hardsigmoid; Keras 2's has no torch op: formula in float32.
    _case(out, "hard_sigmoid_keras3", F.hardsigmoid, [r(6, 7) * 4])
    _case(out, "hard_sigmoid_keras2", lambda x: torch.clamp(x * 0.2 + 0.5, 0.0, 1.0), [r(6, 7) * 4])
    _case(out, "add_bcast", torch.add, [r(3, 1, 5), r(4, 1)])
    _case(out, "sub_bcast", torch.sub, [r(3, 4, 5), r(5)])
    _case(out, "mul_bcast", torch.mul, [r(2, 3, 1), r(1, 3, 4)])
    _case(out, "div_bcast", torch.div, [r(2, 3, 4), torch.rand(3, 1) + 0.5])
    _case(out, "sum_dims", lambda x: x.sum(dim=(0, 2)), [r(3, 4, 5)])
    _case(out, "sum_keep", lambda x: x.sum(dim=1, keepdim=True), [r(3, 4, 5)])
    _case(out, "sum_all", lambda x: x.sum(), [r(30, 40)])
    _case(out, "mean_dims", lambda x: x.mean(dim=(1,)), [r(3, 4, 5)])
    _case(out, "mean_all", lambda x: x.mean(), [r(7, 9)])
    _case(out, "max_dim", lambda x: x.max(dim=1)[0], [r(3, 6, 4)])
    _case(out, "amax_all", lambda x: x.max(), [r(5, 6)])
    _case(out, "matmul", torch.matmul, [r(7, 13), r(13, 5)])
    _case(out, "bmm", torch.matmul, [r(3, 7, 13), r(3, 13, 5)])
    _case(out, "linear", F.linear, [r(2, 3, 20), r(11, 20), r(11)])
    _case(out, "linear_nobias", F.linear, [r(6, 20), r(11, 20)])
    _case(out, "cat", lambda a, b: torch.cat([a, b], dim=1), [r(2, 3, 4), r(2, 5, 4)])
    _case(out, "stack", lambda a, b: torch.stack([a, b], dim=2), [r(2, 3, 4), r(2, 3, 4)])
