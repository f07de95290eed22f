"""Layer modules (float32): GRUCell forward and every gradient for sigmoid and both Keras
hard_sigmoid gates, BatchNorm2d running statistics over two training steps, and the state_dict /
named_parameters / named_buffers names of a nested model (text file read by tests/test_layers.cpp).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from generate import save


def _gru_manual(x, h, w_ih, w_hh, b_ih, b_hh, act):
    """torch's CPU GRUCell kernel (ATen RNN.cpp GRUCell) with a pluggable in-place gate activation.

    The in-place ops on the strided chunk views matter for bit-exactness: torch's sigmoid takes a
    scalar path on strided tensors that differs by 1 ulp from its vectorised path."""
    gi = F.linear(x, w_ih, b_ih)
    gh = F.linear(h, w_hh, b_hh)
    i_r, i_z, i_n = gi.unsafe_chunk(3, 1)
    h_r, h_z, h_n = gh.unsafe_chunk(3, 1)
    r = act(h_r.add_(i_r))
    z = act(h_z.add_(i_z))
    n = i_n.add(h_n.mul_(r)).tanh_()
    return (h - n).mul_(z).add_(n)


def _hard_sigmoid_keras2_(x):
    return x.mul_(0.2).add_(0.5).clamp_(0.0, 1.0)


def _hard_sigmoid_keras3_(x):
    return F.hardsigmoid(x, inplace=True)


def _gru_case(out, name, act, bias=True, B=4, I=7, H=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, I, generator=g) * 1.5
    h = torch.randn(B, H, generator=g) * 0.8
    # Weights large enough that some hard_sigmoid gates saturate (zero gradient there).
    w_ih = torch.randn(3 * H, I, generator=g) * 0.6
    w_hh = torch.randn(3 * H, H, generator=g) * 0.6
    b_ih = torch.randn(3 * H, generator=g) * 0.5 if bias else None
    b_hh = torch.randn(3 * H, generator=g) * 0.5 if bias else None
    gy = torch.rand(B, H, generator=g) + 0.5
    tensors = {"x": x, "h": h, "weight_ih": w_ih, "weight_hh": w_hh}
    if bias:
        tensors.update(bias_ih=b_ih, bias_hh=b_hh)
    leaves = {k: v.clone().requires_grad_(True) for k, v in tensors.items()}
    if act is None:
        # The real module: proves the names, layout and arithmetic we mirror.
        cell = nn.GRUCell(I, H, bias=bias)
        with torch.no_grad():
            for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                if k in leaves:
                    getattr(cell, k).copy_(tensors[k])
        y = cell(leaves["x"], leaves["h"])
        y.backward(gy)
        for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            if k in leaves:
                leaves[k].grad = getattr(cell, k).grad.clone()
        # The manual formula must be bit-exact with the module, or the hard_sigmoid references
        # below would not be torch's arithmetic.
        manual = _gru_manual(x, h, w_ih, w_hh, b_ih, b_hh, torch.sigmoid_)
        assert torch.equal(manual, y.detach()), "manual GRU cell differs from nn.GRUCell"
    else:
        y = _gru_manual(leaves["x"], leaves["h"], leaves["weight_ih"], leaves["weight_hh"],
                        leaves.get("bias_ih"), leaves.get("bias_hh"), act)
        y.backward(gy)
    for k, v in leaves.items():
        save(out, f"{name}__{k}", v)
        save(out, f"{name}__grad_{k}", v.grad)
    save(out, f"{name}__out", y)
    save(out, f"{name}__grad_out", gy)


def _bn_case(out, name, momentum, seed=1):
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(3, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(3, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(3, generator=g))
    save(out, f"{name}__weight", bn.weight)
    save(out, f"{name}__bias", bn.bias)
    xs = [torch.randn(4, 3, 5, 5, generator=g) * 2 + 1 for _ in range(3)]
    bn.train()
    for i in range(2):
        save(out, f"{name}__x{i}", xs[i])
        save(out, f"{name}__train_out{i}", bn(xs[i]))
    save(out, f"{name}__running_mean", bn.running_mean)
    save(out, f"{name}__running_var", bn.running_var)
    save(out, f"{name}__num_batches_tracked", bn.num_batches_tracked)
    bn.eval()
    save(out, f"{name}__x2", xs[2])
    save(out, f"{name}__eval_out", bn(xs[2]))


class _Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6, padding_idx=0)
        self.gru = nn.GRUCell(6, 5)
        self.out = nn.Linear(5, 10, bias=False)


class _Nested(nn.Module):
    """Parent-level entries registered after the children still come first in state_dict."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Sequential(nn.Conv2d(4, 8, 3, bias=False), nn.BatchNorm2d(8)))
        self.proj = nn.Linear(8, 6)
        self.decoder = _Decoder()
        self.scale = nn.Parameter(torch.ones(3))
        self.register_buffer("step", torch.zeros(()))


def _names(out):
    m = _Nested()
    lines = []
    for kind, items in (("state", m.state_dict().items()), ("param", m.named_parameters()),
                        ("buffer", m.named_buffers())):
        for k, v in items:
            lines.append(f"{kind} {k} {','.join(str(d) for d in v.shape)}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "nested_names.txt").write_text("\n".join(lines) + "\n")


def generate(out):
    _gru_case(out, "gru_sigmoid", None)
    _gru_case(out, "gru_sigmoid_nobias", None, bias=False, seed=3)
    _gru_case(out, "gru_hs_keras2", _hard_sigmoid_keras2_, seed=1)
    _gru_case(out, "gru_hs_keras3", _hard_sigmoid_keras3_, seed=2)
    _bn_case(out, "bn_momentum", 0.1)
    _bn_case(out, "bn_cumulative", None)
    _names(out)
