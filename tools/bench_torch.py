#!/usr/bin/env python3
"""The PyTorch side of the CPU speed benchmark: times tools/can_twin.py (our PyTorch twin of CAN /
DWAP) on the same shapes as `hmer bench` and prints the same JSON keys.

    /usr/bin/python3 tools/bench_torch.py --config configs/can.yaml [--batch 8 --height 120 --width 480
        --tokens 30 --steps 10 --warmup 2 --decode-repeats 5 --threads 2 --seed 0 --json FILE
        --skip-train --skip-decode --count-only --peak-gflops 220]

What is measured (the C++ bench measures the same things):
  train step  model.train() (dropout as the config says), random weights (the twin's default init
              after torch.manual_seed(seed)); one random padded batch made once: images U[0,1) of
              (B,1,H,W), image i valid over all rows and its first w_i columns (w_0 = W, the others
              U{W/2..W}), zero outside; labels (B,T) U{2..V-1} (V = 111 for CAN's dictionary) with
              the last column eos (0); labels_mask all ones. One step = zero grads, forward,
              backward, clip_grad_norm_(100), Adadelta(lr 1, rho 0.9, eps 1e-6, weight decay 1e-4)
              step. Wall clock per step, warm-up excluded, median reported as train_step_s; `loss` is
              the first timed step's loss.
  decode      model.eval(), no_grad, one (1,1,H,W) U[0,1) image with an all-ones mask (as the
              official inference): encoder, counting (CAN), decoder start, then exactly T greedy
              steps (argmax fed back, no stop at eos). Whole thing timed per repeat, one untimed
              warm-up repeat, median as decode_s.
  FLOPs       forward hooks on Conv2d / Linear / GRUCell during one training forward (x3 for
              forward + backward) and one decode; see flop_count_method in the JSON.

--count-only skips all timing and only counts FLOPs (one no-grad forward at the given size).
The JSON goes to stdout, and also to --json FILE when given. PyTorch's best CPU setup (OpenMP
OpenBLAS, ATEN_CPU_CAPABILITY=avx512, OMP_NUM_THREADS) is the caller's job (scripts/bench.sh); a
warning goes to stderr when the loaded BLAS is not OpenBLAS's OpenMP build.
"""
import argparse
import ctypes
import json
import os
import pathlib
import platform
import re
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import can_twin  # noqa: E402

FIRST_LABEL_ID = 2    # ids 0 (eos) and 1 (sos) are never drawn; the last drawn is vocab - 1 (110 for CAN)
CLIP_NORM = 100.0
ADADELTA = dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=1e-4)
DEFAULT_PEAK_GFLOPS = 220.0
PEAK_NOTE = ("FP32 peak assumed: 2 cores x ~3.5 GHz boost x 32 FLOP/cycle/core (one 16-lane AVX-512 FMA "
             "per cycle) = 224, the issue's ~220")
FLOP_COUNT_METHOD = (
    "forward hooks during one forward: Conv2d 2*N*Cout*Hout*Wout*(Cin/groups)*kh*kw, Linear 2*rows*in*out "
    "(rows = product of leading dims), GRUCell 2*B*3*H*(I+H); biases, BatchNorm, pooling, activations, "
    "attention softmax/weighted sums, embedding and the loss not counted. train_gflop_per_step = 3 x "
    "forward (backward ~ 2 x forward for these ops: input grad + weight grad); decode_gflop = one decode.")


# ---- environment ---------------------------------------------------------------------------------

def mapped_libraries():
    """Paths of the shared objects mapped into this process (Linux)."""
    try:
        with open("/proc/self/maps") as f:
            return sorted({ln.split()[-1] for ln in f if "/" in ln and ".so" in ln})
    except OSError:
        return []


def blas_info():
    """Which BLAS torch's GEMMs really call. Debian's torch is built against the generic
    libblas.so.3 (BLAS_INFO=generic), so the libblas.so.3 that got loaded decides: reference BLAS,
    or OpenBLAS's OpenMP or pthread build. Only that library counts: liblapack.so.3 may pull in
    libopenblas while sgemm still comes from the reference libblas (twice as slow here)."""
    libs = mapped_libraries()
    blas_libs = [p for p in libs if "blas" in p.lower()]
    generic = [p for p in blas_libs if os.path.basename(p).startswith("libblas.so")]
    direct = [p for p in blas_libs if os.path.basename(p).startswith("libopenblas")]
    gemm_lib = (generic or direct or [None])[0]  # a torch linked to libopenblas directly has no libblas
    info = {
        "gemm_library": gemm_lib,
        "libraries": blas_libs,
        "openblas": bool(gemm_lib) and "openblas" in gemm_lib,
        "openmp": bool(gemm_lib) and "openblas-openmp" in gemm_lib,
        "pthread": bool(gemm_lib) and "openblas-pthread" in gemm_lib,
        "torch_blas_info": None,
        "openblas_config": None,
        "openblas_parallel": None,
    }
    built = re.search(r"BLAS_INFO=([\w.-]+)", torch.__config__.show())
    if built:
        info["torch_blas_info"] = built.group(1)
    # OpenBLAS states its own build (openblas_get_parallel: 0 sequential, 1 pthreads, 2 OpenMP);
    # it decides only when libopenblas itself is the GEMM library (no Debian directory to go by).
    if direct:
        try:
            lib = ctypes.CDLL(direct[0])
            lib.openblas_get_config.restype = ctypes.c_char_p
            info["openblas_config"] = lib.openblas_get_config().decode()
            info["openblas_parallel"] = {0: "sequential", 1: "pthread", 2: "openmp"}.get(
                lib.openblas_get_parallel(), "unknown")
        except (OSError, AttributeError):
            pass
        if gemm_lib == direct[0]:
            info["openblas"] = True
            info["openmp"] = info["openblas_parallel"] == "openmp"
            info["pthread"] = info["openblas_parallel"] == "pthread"
    return info


def cpu_capability():
    """The SIMD level ATen dispatches to: the env override, and what torch reports using."""
    torch_cap = None
    backends_cpu = getattr(torch.backends, "cpu", None)
    if backends_cpu is not None and hasattr(backends_cpu, "get_cpu_capability"):
        torch_cap = backends_cpu.get_cpu_capability()
    else:  # torch < 2.0: only the build summary says it
        for ln in torch.__config__.show().splitlines():
            if "CPU capability usage:" in ln:
                torch_cap = ln.split(":", 1)[1].strip()
    return {"env": os.environ.get("ATEN_CPU_CAPABILITY"), "torch": torch_cap}


# ---- inputs --------------------------------------------------------------------------------------

def training_batch(rng, b, h, w, t, vocab):
    """The padded batch: full-height images, image 0 full width (so the batch is W wide), the others
    U{W/2..W} columns; pixels outside the mask are 0 as in CAN's collate."""
    widths = [w] + [int(rng.randint(w // 2, w + 1)) for _ in range(b - 1)]
    images = rng.random_sample((b, 1, h, w)).astype(np.float32)
    mask = np.zeros((b, 1, h, w), dtype=np.float32)
    for i, wi in enumerate(widths):
        mask[i, :, :, :wi] = 1
    images *= mask
    labels = rng.randint(FIRST_LABEL_ID, vocab, size=(b, t)).astype(np.int64)
    labels[:, -1] = 0  # eos closes every caption
    return (torch.from_numpy(images), torch.from_numpy(mask), torch.from_numpy(labels),
            torch.ones((b, t), dtype=torch.float32))


def decode_image(rng, h, w):
    return torch.from_numpy(rng.random_sample((1, 1, h, w)).astype(np.float32))


# ---- the measured work ---------------------------------------------------------------------------

def make_optimizer(params):
    # foreach: the multi-tensor Adadelta (same arithmetic, fewer kernel launches); torch 1.13
    # leaves it off by default, and "at its best" is what we compare against.
    return torch.optim.Adadelta(params, foreach=True, **ADADELTA)


def train_step(model, params, opt, batch):
    opt.zero_grad(set_to_none=True)
    loss = model(*batch)["loss"]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
    opt.step()
    return loss.detach()


@torch.no_grad()
def greedy_fixed(model, image, steps):
    """CAN.greedy without the eos stop: exactly `steps` decoder steps, so every repeat (and the C++
    side) does the same work whatever the random weights predict."""
    feats = model.encoder(image)
    mask = torch.ones((1, 1) + tuple(feats.shape[2:]))
    counts = model.count(feats, None)[0] if model.counting else None
    dec = model.decoder
    hidden, trans, u, alpha_sum = dec.start(feats, mask, counts)
    emb = dec.embedding(torch.ones(1, dtype=torch.long))
    words = []
    for _ in range(steps):
        logits, hidden, alpha_sum = dec.step(feats, trans, mask, u, hidden, alpha_sum, emb)
        word = logits.argmax(1)
        words.append(word)
        emb = dec.embedding(word)
    return torch.cat(words)


def time_train(model, batch, steps, warmup):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params)
    times, first_loss = [], None
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = train_step(model, params, opt, batch)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
            if first_loss is None:
                first_loss = float(loss)
    return times, first_loss


def time_decode(model, image, tokens, repeats):
    model.eval()
    greedy_fixed(model, image, tokens)  # untimed warm-up: first-call allocations, oneDNN primitives
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        greedy_fixed(model, image, tokens)
        times.append(time.perf_counter() - t0)
    return times


# ---- FLOP counting -------------------------------------------------------------------------------

def module_flops(module, inputs, output):
    if isinstance(module, nn.Conv2d):
        n, c_out, h_out, w_out = output.shape
        kh, kw = module.kernel_size
        return 2 * n * c_out * h_out * w_out * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        x = inputs[0]
        rows = x.numel() // x.shape[-1]
        return 2 * rows * module.in_features * module.out_features
    if isinstance(module, nn.GRUCell):
        b = inputs[0].shape[0] if inputs[0].dim() == 2 else 1
        return 2 * b * 3 * module.hidden_size * (module.input_size + module.hidden_size)
    return 0


def count_flops(model, fn):
    """FLOPs of the counted layers while fn() runs (hooks removed afterwards, so timing never pays them)."""
    total = [0]

    def hook(module, inputs, output):
        total[0] += module_flops(module, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear, nn.GRUCell))]
    try:
        with torch.no_grad():
            fn()
    finally:
        for hd in handles:
            hd.remove()
    return total[0]


# ---- driver --------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="YAML config, e.g. configs/can.yaml (the official CAN)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--tokens", type=int, default=30, help="caption length incl. eos; decode steps")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    ap.add_argument("--decode-repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the JSON here")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--count-only", action="store_true", help="count FLOPs only, time nothing")
    ap.add_argument("--peak-gflops", type=float, default=DEFAULT_PEAK_GFLOPS)
    args = ap.parse_args(argv)
    if args.batch < 1 or args.height < 1 or args.width < 2 or args.tokens < 1:
        ap.error("--batch, --height, --tokens must be >= 1 and --width >= 2")
    no_train = args.steps < 1 and not args.skip_train
    no_decode = args.decode_repeats < 1 and not args.skip_decode
    if not args.count_only and (no_train or no_decode):
        ap.error("--steps and --decode-repeats must be >= 1 (or use --skip-train / --skip-decode / --count-only)")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    return args


def rounded(x, digits=6):
    return None if x is None else round(x, digits)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    blas = blas_info()
    if not blas["openmp"]:
        print("bench_torch: warning: torch is not using the OpenMP build of OpenBLAS (GEMMs go to "
              f"{blas['gemm_library'] or 'no libblas/libopenblas'}); set "
              "LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp (scripts/bench.sh does) or the "
              "comparison understates PyTorch", file=sys.stderr)

    params = can_twin.load_params(args.config)
    torch.manual_seed(args.seed)
    model = can_twin.build(params)
    rng = np.random.RandomState(args.seed)
    batch = training_batch(rng, args.batch, args.height, args.width, args.tokens, params["word_num"])
    image = decode_image(rng, args.height, args.width)

    train_times = loss = decode_times = None
    if not args.count_only:
        if not args.skip_train:
            train_times, loss = time_train(model, batch, args.steps, args.warmup)
        if not args.skip_decode:
            decode_times = time_decode(model, image, args.tokens, args.decode_repeats)

    # Counted after timing so the hooks and this extra forward never touch the timed runs.
    train_gflop = decode_gflop = None
    if not args.skip_train:
        model.train()
        train_gflop = 3 * count_flops(model, lambda: model(*batch)) / 1e9
    if not args.skip_decode:
        model.eval()
        decode_gflop = count_flops(model, lambda: greedy_fixed(model, image, args.tokens)) / 1e9

    train_s = statistics.median(train_times) if train_times else None
    decode_s = statistics.median(decode_times) if decode_times else None
    gflops = train_gflop / train_s if train_s and train_gflop is not None else None
    result = {
        "engine": "pytorch",
        "torch_version": torch.__version__,
        "config": args.config,
        "model": params["kind"],
        "params": can_twin.count_params(model),
        "batch": args.batch,
        "height": args.height,
        "width": args.width,
        "tokens": args.tokens,
        "seed": args.seed,
        "steps": args.steps,
        "warmup": args.warmup,
        "decode_repeats": args.decode_repeats,
        "threads": torch.get_num_threads(),
        "optimizer": "Adadelta(lr=1, rho=0.9, eps=1e-6, weight_decay=1e-4, foreach=True), clip_grad_norm 100",
        "train_step_s": rounded(train_s),
        "train_step_s_all": [rounded(t) for t in train_times] if train_times else None,
        "loss": loss,
        "decode_s": rounded(decode_s),
        "decode_s_all": [rounded(t) for t in decode_times] if decode_times else None,
        "train_gflop_per_step": rounded(train_gflop, 3),
        "decode_gflop": rounded(decode_gflop, 4),
        "gflops_per_s": rounded(gflops, 3),
        "decode_gflops_per_s": rounded(decode_gflop / decode_s, 3) if decode_s and decode_gflop is not None else None,
        "peak_gflops": args.peak_gflops,
        "peak_note": PEAK_NOTE,
        "pct_of_peak": rounded(100 * gflops / args.peak_gflops, 2) if gflops is not None else None,
        "flop_count_method": FLOP_COUNT_METHOD,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "blas": blas,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cpu_capability": cpu_capability(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": platform.machine(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        pathlib.Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
