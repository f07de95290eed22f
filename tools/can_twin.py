#!/usr/bin/env python3
"""A PyTorch twin of CAN and DWAP, written from /work/shared/spec/can-model.md with the official
parameter names (LBH1024/CAN), used by hmer's tests as the reference implementation.

The official full-size CAN has 636 state_dict entries and 16,838,280 parameters; without the
counting parts (DWAP) 4,720,200 (asserted by `selfcheck`). Sizes come from the same YAML files as
hmer (configs/*.yaml: the official keys plus ours, docs/model.md).

    can_twin.py selfcheck
    can_twin.py init     --config C --seed S --out W.safetensors
    can_twin.py forward  --config C --weights W --image IMG --tokens "t1 t2" --out DIR
    can_twin.py parity   --config C --weights W --images A B --tokens "..." "..." --out DIR
                         [--steps 5 --steps-per-epoch 5]   (train mode, dropout off)
    can_twin.py greedy   --config C --weights W --images A B ... --out FILE.json

`forward` writes the same .npy dumps as `hmer forward` (eval mode): image, image_mask, encoder_out,
counting_vector (CAN), logits (T, V), loss, pred_tokens.
"""
import argparse
import collections
import json
import math
import os
import pathlib
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from convert_pth import read_safetensors, write_safetensors  # noqa: E402

# CAN's dictionary (can-model.md §2): id = index.
CAN_TOKENS = (["eos", "sos", "!", "'", "(", ")", "+", ",", "-", ".", "/"] + [str(i) for i in range(10)] +
              ["<", "=", ">", "A", "B", "C", "E", "F", "G", "H", "I", "L", "M", "N", "P", "R", "S", "T", "V",
               "X", "Y", "[", "\\Delta", "\\alpha", "\\beta", "\\cdot", "\\cdots", "\\cos", "\\div", "\\exists",
               "\\forall", "\\frac", "\\gamma", "\\geq", "\\in", "\\infty", "\\int", "\\lambda", "\\ldots",
               "\\leq", "\\lim", "\\log", "\\mu", "\\neq", "\\phi", "\\pi", "\\pm", "\\prime", "\\rightarrow",
               "\\sigma", "\\sin", "\\sqrt", "\\sum", "\\tan", "\\theta", "\\times", "]"] +
              [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["\\{", "|", "\\}", "{", "}", "^", "_"])
assert len(CAN_TOKENS) == 111 and CAN_TOKENS[107] == "{" and CAN_TOKENS[110] == "_" and CAN_TOKENS[52] == "\\frac"

OFFICIAL_ENTRIES = 636
OFFICIAL_CAN_PARAMS = 16_838_280
OFFICIAL_DWAP_PARAMS = 4_720_200


# ---- configuration ------------------------------------------------------------------------------

def _bool(v):
    if isinstance(v, bool):
        return v
    return str(v).strip().lower() in ("true", "yes", "on", "1", "y")


def params_from_yaml(cfg):
    """The official `params` dict (plus our keys with their official defaults) from a config map."""
    d = cfg.get("densenet") or {}
    e = cfg.get("encoder") or {}
    dec = cfg.get("decoder") or {}
    att = cfg.get("attention") or {}
    cd = cfg.get("counting_decoder") or {}
    model = cfg.get("model") or {}
    decoding = cfg.get("decoding") or {}
    vocab = cfg.get("vocab") or {}
    if vocab.get("path"):
        words = [ln.strip() for ln in pathlib.Path(vocab["path"]).read_text().splitlines() if ln.strip()]
    else:
        words = list(CAN_TOKENS)
    growth = int(d.get("growthRate", 24))
    depth = int(d.get("depth", 16))
    reduction = float(d.get("reduction", 0.5))
    c = 2 * growth
    for block in range(3):
        c += depth * growth
        if block < 2:
            c = int(math.floor(c * reduction))
    p = {
        "kind": str(model.get("name", "can")).lower(),
        "densenet": {"ratio": int(d.get("ratio", 16)), "growthRate": growth, "reduction": reduction,
                     "bottleneck": _bool(d.get("bottleneck", True)), "use_dropout": _bool(d.get("use_dropout", True)),
                     "dropout_rate": float(d.get("dropout_rate", 0.2)), "depth": depth},
        "encoder": {"input_channel": int(e.get("input_channel", 1)), "out_channel": int(e.get("out_channel", c))},
        "decoder": {"input_size": int(dec.get("input_size", 256)), "hidden_size": int(dec.get("hidden_size", 256))},
        "attention": {"attention_dim": int(att.get("attention_dim", 512)),
                      "word_conv_kernel": int(att.get("word_conv_kernel", 1)),
                      "coverage_channels": int(att.get("coverage_channels", 512)),
                      "coverage_kernel": int(att.get("coverage_kernel", 11)),
                      "positional_encoding": _bool(att.get("positional_encoding", True))},
        "counting_decoder": {"in_channel": int(cd.get("in_channel", c)), "out_channel": int(cd.get("out_channel", len(words))),
                             "hidden_channel": int(cd.get("hidden_channel", 512)), "reduction": int(cd.get("reduction", 16)),
                             "kernel_sizes": [int(k) for k in cd.get("kernel_sizes", [3, 5])],
                             "ignore_tokens": list(cd.get("ignore_tokens", ["eos", "sos", "{", "}", "^", "_"]))},
        "dropout": _bool(cfg.get("dropout", True)),
        "dropout_ratio": float(cfg.get("dropout_ratio", 0.5)),
        "use_label_mask": _bool(cfg.get("use_label_mask", False)),
        "word_num": len(words),
        "words": words,
        "max_steps": int(decoding.get("max_steps", 200)),
    }
    assert p["encoder"]["out_channel"] == c, f"encoder.out_channel {p['encoder']['out_channel']} != computed {c}"
    p["counting_ignore"] = [words.index(t) for t in p["counting_decoder"]["ignore_tokens"]]
    if p["kind"] not in ("can", "dwap"):
        raise ValueError(f"model.name {p['kind']}: expected can or dwap")
    return p


def load_params(path):
    import yaml
    with open(path) as f:
        return params_from_yaml(yaml.safe_load(f))


def official_params(kind="can"):
    return params_from_yaml({"model": {"name": kind}})


def no_dropout(p):
    p = json.loads(json.dumps(p))
    p["dropout"] = False
    p["densenet"]["use_dropout"] = False
    return p


# ---- encoder (§4) -------------------------------------------------------------------------------

class Bottleneck(nn.Module):
    def __init__(self, n_channels, growth, use_dropout, rate):
        super().__init__()
        inter = 4 * growth
        self.bn1 = nn.BatchNorm2d(inter)
        self.conv1 = nn.Conv2d(n_channels, inter, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(growth)
        self.conv2 = nn.Conv2d(inter, growth, kernel_size=3, padding=1, bias=False)
        self.use_dropout = use_dropout
        self.dropout = nn.Dropout(p=rate)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        if self.use_dropout:
            out = self.dropout(out)
        out = F.relu(self.bn2(self.conv2(out)))
        if self.use_dropout:
            out = self.dropout(out)
        return torch.cat((x, out), 1)


class Transition(nn.Module):
    def __init__(self, n_channels, n_out, use_dropout, rate):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(n_out)
        self.conv1 = nn.Conv2d(n_channels, n_out, kernel_size=1, bias=False)
        self.use_dropout = use_dropout
        self.dropout = nn.Dropout(p=rate)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        if self.use_dropout:
            out = self.dropout(out)
        return F.avg_pool2d(out, 2, ceil_mode=True)


class DenseNet(nn.Module):
    def __init__(self, params):
        super().__init__()
        d = params["densenet"]
        g, depth, red, drop, rate = d["growthRate"], d["depth"], d["reduction"], d["use_dropout"], d["dropout_rate"]
        c = 2 * g
        self.conv1 = nn.Conv2d(params["encoder"]["input_channel"], c, kernel_size=7, padding=3, stride=2, bias=False)
        self.dense1 = nn.Sequential(*[Bottleneck(c + i * g, g, drop, rate) for i in range(depth)])
        c += depth * g
        out = int(math.floor(c * red))
        self.trans1 = Transition(c, out, drop, rate)
        c = out
        self.dense2 = nn.Sequential(*[Bottleneck(c + i * g, g, drop, rate) for i in range(depth)])
        c += depth * g
        out = int(math.floor(c * red))
        self.trans2 = Transition(c, out, drop, rate)
        c = out
        self.dense3 = nn.Sequential(*[Bottleneck(c + i * g, g, drop, rate) for i in range(depth)])

    def forward(self, x):
        out = F.relu(self.conv1(x))
        out = F.max_pool2d(out, 2, ceil_mode=True)
        out = self.trans1(self.dense1(out))
        out = self.trans2(self.dense2(out))
        return self.dense3(out)


# ---- counting (§5) ------------------------------------------------------------------------------

class ChannelAtt(nn.Module):
    def __init__(self, channel, reduction):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channel, channel // reduction), nn.ReLU(),
                                nn.Linear(channel // reduction, channel), nn.Sigmoid())

    def forward(self, x):
        b, c = x.shape[:2]
        y = x.mean(dim=(2, 3))  # includes padded cells
        return x * self.fc(y).view(b, c, 1, 1)


class CountingDecoder(nn.Module):
    def __init__(self, in_channel, out_channel, hidden, reduction, kernel_size):
        super().__init__()
        self.out_channel = out_channel
        self.trans_layer = nn.Sequential(
            nn.Conv2d(in_channel, hidden, kernel_size=kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(hidden))
        self.channel_att = ChannelAtt(hidden, reduction)
        self.pred_layer = nn.Sequential(nn.Conv2d(hidden, out_channel, kernel_size=1, bias=False), nn.Sigmoid())

    def forward(self, x, mask):
        b, _, h, w = x.shape
        m = self.pred_layer(self.channel_att(self.trans_layer(x)))
        if mask is not None:
            m = m * mask
        m = m.view(b, self.out_channel, -1)
        return m.sum(-1), m.view(b, self.out_channel, h, w)


def counting_labels(labels, channels, ignore):
    out = torch.zeros((labels.shape[0], channels), dtype=torch.get_default_dtype())
    for i in range(labels.shape[0]):
        for k in labels[i].tolist():
            if k not in ignore:
                out[i][k] += 1
    return out


# ---- decoder (§6) -------------------------------------------------------------------------------

def sine_position_encoding(mask, num_pos_feats, temperature=10000.0):
    """mask (B, H, W) float -> (B, 2*npf, H, W), DETR's normalised sine encoding."""
    # float32 as the official code (a float64 mask, the float64 twin, stays float64)
    dt = torch.float64 if mask.dtype == torch.float64 else torch.float32
    y = mask.cumsum(1, dtype=dt)
    x = mask.cumsum(2, dtype=dt)
    eps, scale = 1e-6, 2 * math.pi
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=dt)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    px = x[:, :, :, None] / dim_t
    py = y[:, :, :, None] / dim_t
    px = torch.stack((px[:, :, :, 0::2].sin(), px[:, :, :, 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[:, :, :, 0::2].sin(), py[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


class Attention(nn.Module):
    def __init__(self, params):
        super().__init__()
        hidden = params["decoder"]["hidden_size"]
        a = params["attention"]
        self.hidden_weight = nn.Linear(hidden, a["attention_dim"])
        self.attention_conv = nn.Conv2d(1, a["coverage_channels"], kernel_size=a["coverage_kernel"],
                                        padding=a["coverage_kernel"] // 2, bias=False)
        self.attention_weight = nn.Linear(a["coverage_channels"], a["attention_dim"], bias=False)
        self.alpha_convert = nn.Linear(a["attention_dim"], 1)

    def forward(self, features, features_trans, hidden, alpha_sum, mask):
        query = self.hidden_weight(hidden)
        cov = self.attention_weight(self.attention_conv(alpha_sum).permute(0, 2, 3, 1))
        score = torch.tanh(query[:, None, None, :] + cov + features_trans.permute(0, 2, 3, 1))
        energy = self.alpha_convert(score)
        energy = energy - energy.max()  # one max over the whole batch
        energy_exp = torch.exp(energy.squeeze(-1))
        if mask is not None:
            energy_exp = energy_exp * mask.squeeze(1)
        alpha = energy_exp / (energy_exp.sum(-1).sum(-1)[:, None, None] + 1e-10)
        alpha_sum = alpha[:, None, :, :] + alpha_sum
        context = (alpha[:, None, :, :] * features).sum(-1).sum(-1)
        return context, alpha, alpha_sum


class AttDecoder(nn.Module):
    def __init__(self, params):
        super().__init__()
        self.params = params
        c = params["encoder"]["out_channel"]
        e, h = params["decoder"]["input_size"], params["decoder"]["hidden_size"]
        a = params["attention"]
        self.word_num = params["word_num"]
        self.counting = params["kind"] == "can"
        self.ratio = params["densenet"]["ratio"]
        self.init_weight = nn.Linear(c, h)
        self.embedding = nn.Embedding(self.word_num, e)
        self.word_input_gru = nn.GRUCell(e, h)
        self.word_attention = Attention(params)
        self.encoder_feature_conv = nn.Conv2d(c, a["attention_dim"], kernel_size=a["word_conv_kernel"],
                                              padding=a["word_conv_kernel"] // 2)
        self.word_state_weight = nn.Linear(h, h)
        self.word_embedding_weight = nn.Linear(e, h)
        self.word_context_weight = nn.Linear(c, h)
        if self.counting:
            self.counting_context_weight = nn.Linear(params["counting_decoder"]["out_channel"], h)
        self.word_convert = nn.Linear(h, self.word_num)
        self.dropout = nn.Dropout(params["dropout_ratio"])

    def start(self, features, mask, counts):
        hidden = torch.tanh(self.init_weight((features * mask).sum(-1).sum(-1) / mask.sum(-1).sum(-1)))
        trans = self.encoder_feature_conv(features)
        if self.params["attention"]["positional_encoding"]:
            trans = trans + sine_position_encoding(mask[:, 0, :, :], self.params["attention"]["attention_dim"] // 2)
        u = self.counting_context_weight(counts) if self.counting else None
        alpha_sum = torch.zeros((features.shape[0], 1) + tuple(features.shape[2:]))
        return hidden, trans, u, alpha_sum

    def step(self, features, trans, mask, u, hidden, alpha_sum, token_emb):
        hidden = self.word_input_gru(token_emb, hidden)
        context, alpha, alpha_sum = self.word_attention(features, trans, hidden, alpha_sum, mask)
        out = self.word_state_weight(hidden) + self.word_embedding_weight(token_emb) + self.word_context_weight(context)
        if u is not None:
            out = out + u
        if self.params["dropout"]:
            out = self.dropout(out)
        return self.word_convert(out), hidden, alpha_sum

    def forward(self, features, labels, counts, mask):
        """Teacher forcing; mask is the feature mask (B, 1, h, w)."""
        b, t = labels.shape
        hidden, trans, u, alpha_sum = self.start(features, mask, counts)
        logits = []
        for i in range(t):
            tok = labels[:, i - 1] if i else torch.ones(b, dtype=torch.long)
            lg, hidden, alpha_sum = self.step(features, trans, mask, u, hidden, alpha_sum, self.embedding(tok))
            logits.append(lg)
        return torch.stack(logits, 1)


class CAN(nn.Module):
    def __init__(self, params):
        super().__init__()
        self.params = params
        self.ratio = params["densenet"]["ratio"]
        self.encoder = DenseNet(params)
        self.counting = params["kind"] == "can"
        cd = params["counting_decoder"]
        if self.counting:
            for i, k in enumerate(cd["kernel_sizes"]):
                self.add_module(f"counting_decoder{i + 1}", CountingDecoder(
                    cd["in_channel"], cd["out_channel"], cd["hidden_channel"], cd["reduction"], k))
        self.decoder = AttDecoder(params)

    def branches(self):
        return [getattr(self, f"counting_decoder{i + 1}") for i in range(len(self.params["counting_decoder"]["kernel_sizes"]))]

    def count(self, features, mask):
        vs = [d(features, mask)[0] for d in self.branches()]
        total = vs[0]
        for v in vs[1:]:
            total = total + v
        return total / len(vs), vs

    def forward(self, images, images_mask, labels, labels_mask):
        feats = self.encoder(images)
        fmask = images_mask[:, :, ::self.ratio, ::self.ratio]
        out = {"encoder_out": feats}
        counts = None
        if self.counting:
            counts, vs = self.count(feats, fmask)
            targets = counting_labels(labels, self.params["counting_decoder"]["out_channel"], self.params["counting_ignore"])
            cl = F.smooth_l1_loss(vs[0], targets)
            for v in vs[1:]:
                cl = cl + F.smooth_l1_loss(v, targets)
            cl = cl + F.smooth_l1_loss(counts, targets)
            out.update(counting_vector=counts, counting_loss=cl, count_targets=targets)
            for i, v in enumerate(vs):
                out[f"counting_vector{i + 1}"] = v
        logits = self.decoder(feats, labels, counts, fmask)
        v = logits.shape[-1]
        if self.params["use_label_mask"]:
            per = F.cross_entropy(logits.reshape(-1, v), labels.reshape(-1), reduction="none")
            wl = (per * labels_mask.reshape(-1)).sum() / (labels_mask.sum() + 1e-10)
        else:
            wl = F.cross_entropy(logits.reshape(-1, v), labels.reshape(-1))
        out.update(logits=logits, word_loss=wl, loss=wl + out["counting_loss"] if self.counting else wl)
        return out

    @torch.no_grad()
    def greedy(self, image, max_steps=200):
        """infer_model.py: batch 1, all-ones mask, counting maps unmasked, stop when argmax is eos."""
        feats = self.encoder(image)
        mask = torch.ones((1, 1) + tuple(feats.shape[2:]))
        counts = self.count(feats, None)[0] if self.counting else None
        hidden, trans, u, alpha_sum = self.decoder.start(feats, mask, counts)
        emb = self.decoder.embedding(torch.ones(1, dtype=torch.long))
        out = []
        for _ in range(max_steps):
            lg, hidden, alpha_sum = self.decoder.step(feats, trans, mask, u, hidden, alpha_sum, emb)
            _, word = lg.max(1)
            if word.item() == 0:
                break
            out.append(word.item())
            emb = self.decoder.embedding(word)
        return out


def build(params):
    return CAN(params)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def selfcheck():
    can = build(official_params("can"))
    sd = can.state_dict()
    assert len(sd) == OFFICIAL_ENTRIES, f"CAN state_dict has {len(sd)} entries, expected {OFFICIAL_ENTRIES}"
    n = count_params(can)
    assert n == OFFICIAL_CAN_PARAMS, f"CAN has {n} parameters, expected {OFFICIAL_CAN_PARAMS}"
    dwap = build(official_params("dwap"))
    m = count_params(dwap)
    assert m == OFFICIAL_DWAP_PARAMS, f"DWAP has {m} parameters, expected {OFFICIAL_DWAP_PARAMS}"
    return len(sd), n, len(dwap.state_dict()), m


# ---- I/O ----------------------------------------------------------------------------------------

def load_weights(model, path):
    tensors, _ = read_safetensors(path)
    sd = collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in tensors.items())
    model.load_state_dict(sd, strict=True)


def save_weights(model, path):
    write_safetensors(path, model.state_dict(), {"format": "pt", "source": "can_twin"})


def read_image(path):
    from PIL import Image
    a = np.array(Image.open(path).convert("L"), dtype=np.uint8)
    return (255 - torch.from_numpy(a).float()) / 255  # (H, W): ink -> 0, background -> 1


def collate(images, token_lists, words):
    """CAN's collate for already-accepted items: top-left placement, pad 0, eos appended."""
    mh = max(i.shape[0] for i in images)
    mw = max(i.shape[1] for i in images)
    ml = max(len(t) for t in token_lists) + 1
    n = len(images)
    x = torch.zeros((n, 1, mh, mw))
    m = torch.zeros((n, 1, mh, mw))
    lab = torch.zeros((n, ml), dtype=torch.long)
    lm = torch.zeros((n, ml))
    for i, (img, toks) in enumerate(zip(images, token_lists)):
        h, w = img.shape
        x[i, 0, :h, :w] = img
        m[i, 0, :h, :w] = 1
        ids = [words.index(t) for t in toks] + [0]
        lab[i, :len(ids)] = torch.tensor(ids)
        lm[i, :len(ids)] = 1
    return x, m, lab, lm


def save_npy(out, name, t):
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().contiguous().numpy()
    np.save(out / f"{name}.npy", np.array(t, order="C"))


def can_lr(step, steps_per_epoch, lr0=1.0):
    """The official schedule in epoch 0: linear warm-up per step (can-model.md §10)."""
    return lr0 * (step + 1) / steps_per_epoch


def run_parity(model, images, mask, labels, lmask, out, steps, steps_per_epoch):
    """Train mode (dropout off in params): forward, every gradient, then `steps` Adadelta steps."""
    model.train()
    res = model(images, mask, labels, lmask)
    res["loss"].backward()
    for k in ("encoder_out", "counting_vector", "counting_vector1", "counting_vector2", "logits", "word_loss",
              "counting_loss", "loss"):
        if k in res:
            save_npy(out, k, res[k])
    grads = collections.OrderedDict((n, p.grad.detach().clone()) for n, p in model.named_parameters())
    write_safetensors(out / "grads.safetensors", grads)
    losses = []
    if steps:
        opt = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.9, eps=1e-6, weight_decay=1e-4)
        for s in range(steps):
            for g in opt.param_groups:
                g["lr"] = can_lr(s, steps_per_epoch)
            opt.zero_grad()
            r = model(images, mask, labels, lmask)
            r["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 100)
            opt.step()
            losses.append(r["loss"].item())
        save_npy(out, "adadelta_losses", np.array(losses, dtype=np.float64))
        save_weights(model, out / "after_steps.safetensors")
    return res, losses


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("selfcheck")
    a = sub.add_parser("init")
    a.add_argument("--config", required=True)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", required=True)
    f = sub.add_parser("forward")
    f.add_argument("--config", required=True)
    f.add_argument("--weights", required=True)
    f.add_argument("--image", required=True)
    f.add_argument("--tokens", required=True)
    f.add_argument("--out", required=True)
    p = sub.add_parser("parity")
    p.add_argument("--config", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--images", nargs="+", required=True)
    p.add_argument("--tokens", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--steps-per-epoch", type=int, default=5)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    g = sub.add_parser("greedy")
    g.add_argument("--config", required=True)
    g.add_argument("--weights", required=True)
    g.add_argument("--images", nargs="+", required=True)
    g.add_argument("--out", required=True)
    args = ap.parse_args()
    # One thread by default: on a shared machine two spinning threads are several times slower.
    torch.set_num_threads(int(os.environ.get("HMER_TWIN_THREADS", "1")))

    if args.cmd == "selfcheck":
        n_sd, n_can, n_sd_dwap, n_dwap = selfcheck()
        print(f"CAN: {n_sd} state_dict entries, {n_can} parameters; DWAP: {n_sd_dwap} entries, {n_dwap} parameters")
        return 0
    params = load_params(args.config)
    if args.cmd == "init":
        torch.manual_seed(args.seed)
        save_weights(build(params), args.out)
        return 0
    if args.cmd == "forward":
        model = build(params)
        load_weights(model, args.weights)
        model.eval()
        img = read_image(args.image)
        x, m, lab, lm = collate([img], [args.tokens.split()], params["words"])
        out = pathlib.Path(args.out)
        with torch.no_grad():
            r = model(x, m, lab, lm)
        save_npy(out, "image", x)
        save_npy(out, "image_mask", m)
        save_npy(out, "encoder_out", r["encoder_out"])
        if "counting_vector" in r:
            save_npy(out, "counting_vector", r["counting_vector"])
        save_npy(out, "logits", r["logits"][0])
        save_npy(out, "loss", r["loss"])
        save_npy(out, "pred_tokens", np.array(model.greedy(x, params["max_steps"]), dtype=np.int64))
        return 0
    if args.cmd == "parity":
        params = no_dropout(params)
        model = build(params)
        load_weights(model, args.weights)
        imgs = [read_image(i) for i in args.images]
        x, m, lab, lm = collate(imgs, [t.split() for t in args.tokens], params["words"])
        if args.dtype == "float64":
            # The exact-arithmetic stand-in: where float32 itself is ill-conditioned, both float32
            # implementations are judged by their distance to this.
            model = model.double()
            torch.set_default_dtype(torch.float64)
            x, m, lm = x.double(), m.double(), lm.double()
        out = pathlib.Path(args.out)
        save_npy(out, "images", x)
        save_npy(out, "image_mask", m)
        save_npy(out, "labels", lab)
        save_npy(out, "label_mask", lm)
        run_parity(model, x, m, lab, lm, out, args.steps, args.steps_per_epoch)
        return 0
    if args.cmd == "greedy":
        model = build(params)
        load_weights(model, args.weights)
        model.eval()
        res = {}
        for path in args.images:
            res[pathlib.Path(path).name] = model.greedy(read_image(path)[None, None], params["max_steps"])
        pathlib.Path(args.out).write_text(json.dumps(res, indent=0))
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
