"""CAN / DWAP end to end with the PyTorch twin (tools/can_twin.py) at CI size (configs/can_tiny.yaml).

For each case (tiny = CAN, tiny_dwap = the same sizes without counting), in <out>/model/<case>/:
    weights.safetensors        the twin's initial weights (torch init, torch.manual_seed)
    images, image_mask         (2, 1, 40, 90): two synthetic ink images of different sizes, padded
    labels, label_mask         (2, 14) int64 / float32, eos appended, padded with eos
    encoder_out, counting_vector, counting_vector{1,2}, logits (2, 14, 111), word_loss,
    counting_loss, loss        train mode, dropout off (BatchNorm uses batch statistics)
    grads.safetensors          every parameter's gradient after loss.backward()
    adadelta_losses            (5,) float64: 5 steps of Adadelta(lr per the CAN warm-up over a
                               5-step epoch, rho 0.9, eps 1e-6, weight_decay 1e-4), clip 100
    after_steps.safetensors    weights and BatchNorm buffers after those steps
    eval_encoder_out, eval_counting_vector, eval_logits, eval_loss   eval mode after the steps
    greedy_init_{i}, greedy_after_{i}   int64 greedy tokens of image i at its own size
Shared: pe_mask (2, 3, 5) and pe (2, 20, 3, 5): the positional encoding of a partly padded mask;
official_{can,dwap}_state.txt: "name shape dtype" of the full-size official models (the twin
asserts 636 entries, 16,838,280 and 4,720,200 parameters).
"""
import math
import pathlib
import sys

import numpy as np
import torch

from generate import save

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import can_twin  # noqa: E402

TOKENS = [r"x ^ { 2 } + \frac { a } { b }", "1 + 1 = 2"]
SIZES = [(40, 72), (30, 90)]
STEPS = 5


def ink_image(rng, h, w):
    """uint8 white strokes on black (CROHME polarity): a few random thick line segments."""
    img = np.zeros((h, w), dtype=np.uint8)
    for _ in range(6):
        y0, x0, y1, x1 = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, w)
        for t in np.linspace(0, 1, 4 * (h + w)):
            y, x = int(y0 + t * (y1 - y0)), int(x0 + t * (x1 - x0))
            img[max(0, y - 1):y + 2, max(0, x - 1):x + 2] = 255
    return img


def write_state_listing(path, model):
    with open(path, "w") as f:
        for k, v in model.state_dict().items():
            f.write(f"{k} {list(v.shape)} {str(v.dtype).replace('torch.', '')}\n")


def case(out, params, seed, images, tokens):
    params = can_twin.no_dropout(params)
    torch.manual_seed(seed)
    model = can_twin.build(params)
    can_twin.save_weights(model, out / "weights.safetensors")
    x, m, lab, lm = can_twin.collate(images, tokens, params["words"])
    save(out, "images", x)
    save(out, "image_mask", m)
    save(out, "labels", lab)
    save(out, "label_mask", lm)

    model.eval()
    for i, img in enumerate(images):
        save(out, f"greedy_init_{i}", np.array(model.greedy(img[None, None], params["max_steps"]), dtype=np.int64))
    can_twin.run_parity(model, x, m, lab, lm, out, STEPS, STEPS)
    model.eval()
    with torch.no_grad():
        r = model(x, m, lab, lm)
    save(out, "eval_encoder_out", r["encoder_out"])
    if "counting_vector" in r:
        save(out, "eval_counting_vector", r["counting_vector"])
    save(out, "eval_logits", r["logits"])
    save(out, "eval_loss", r["loss"])
    for i, img in enumerate(images):
        save(out, f"greedy_after_{i}", np.array(model.greedy(img[None, None], params["max_steps"]), dtype=np.int64))


def generate(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    entries, n_can, _, n_dwap = can_twin.selfcheck()
    assert (entries, n_can, n_dwap) == (636, 16_838_280, 4_720_200)
    write_state_listing(out / "official_can_state.txt", can_twin.build(can_twin.official_params("can")))
    write_state_listing(out / "official_dwap_state.txt", can_twin.build(can_twin.official_params("dwap")))

    mask = torch.ones(2, 3, 5)
    mask[0, :, 4:] = 0
    mask[1, 2:, :] = 0
    mask[1, :, 3:] = 0
    save(out, "pe_mask", mask)
    save(out, "pe", can_twin.sine_position_encoding(mask, 10))

    rng = np.random.RandomState(5)
    images = [torch.from_numpy((255.0 - ink_image(rng, h, w).astype(np.float32)) / 255.0).float()
              for h, w in SIZES]
    tokens = [t.split() for t in TOKENS]
    tiny = can_twin.load_params(ROOT / "configs" / "can_tiny.yaml")
    case(out / "tiny", tiny, 11, images, tokens)
    dwap = can_twin.load_params(ROOT / "configs" / "can_tiny.yaml")
    dwap["kind"] = "dwap"
    case(out / "tiny_dwap", dwap, 12, images, tokens)
