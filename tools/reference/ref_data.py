"""CAN's collate (LBH1024/CAN dataset.py), reimplemented from can-model.md §3 on small synthetic samples.

Per case, the inputs are saved as <case>__img{i} (H, W) int64 pixel values 0..255 and <case>__ids{i}
(L,) int64 token ids without eos; the outputs as <case>__images (N, 1, H, W) float32,
<case>__image_mask (N, 1, H, W) float32, <case>__labels (N, T) int64, <case>__label_mask (N, T)
float32 and <case>__kept (N,) int64, the input positions the size rule accepted.
"""
import torch

from generate import save

EOS = 0
SKIP_PRODUCT = 1600 * 320


def per_sample(img_u8, ids):
    """CAN's dataset __getitem__: x = (255 - p) / 255 as float32 of shape (1, H, W); eos appended."""
    x = (255 - img_u8.to(torch.float32)) / 255
    return x.unsqueeze(0), torch.cat([ids, torch.tensor([EOS], dtype=torch.int64)])


def can_collate(items):
    """Walk in order with running maxima over accepted items; skip when h*maxW or w*maxH > 1600*320."""
    max_h = max_w = max_len = 0
    kept = []
    for k, (x, label) in enumerate(items):
        h, w = x.shape[1], x.shape[2]
        if h * max_w > SKIP_PRODUCT or w * max_h > SKIP_PRODUCT:
            continue
        max_h, max_w = max(max_h, h), max(max_w, w)
        max_len = max(max_len, label.shape[0])
        kept.append(k)
    n = len(kept)
    images = torch.zeros((n, 1, max_h, max_w), dtype=torch.float32)
    image_mask = torch.zeros((n, 1, max_h, max_w), dtype=torch.float32)
    labels = torch.zeros((n, max_len), dtype=torch.int64)
    label_mask = torch.zeros((n, max_len), dtype=torch.float32)
    for i, k in enumerate(kept):
        x, label = items[k]
        _, h, w = x.shape
        images[i, :, :h, :w] = x
        image_mask[i, :, :h, :w] = 1
        labels[i, : label.shape[0]] = label
        label_mask[i, : label.shape[0]] = 1
    return images, image_mask, labels, label_mask, torch.tensor(kept, dtype=torch.int64)


def _case(out, name, sizes, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i, ((h, w), n) in enumerate(zip(sizes, lengths)):
        # Mostly background (0) with white ink (255) and a few grey levels, like the offline images.
        img = torch.randint(0, 256, (h, w), generator=g, dtype=torch.int64)
        img = torch.where(img < 200, torch.zeros_like(img), img)
        ids = torch.randint(2, 111, (n,), generator=g, dtype=torch.int64)
        save(out, f"{name}__img{i}", img)
        save(out, f"{name}__ids{i}", ids)
        items.append(per_sample(img, ids))
    images, image_mask, labels, label_mask, kept = can_collate(items)
    save(out, f"{name}__images", images)
    save(out, f"{name}__image_mask", image_mask)
    save(out, f"{name}__labels", labels)
    save(out, f"{name}__label_mask", label_mask)
    save(out, f"{name}__kept", kept)


def generate(out):
    # Eight samples of CROHME-like sizes, none skipped.
    _case(out, "batch8", [(54, 120), (93, 268), (61, 40), (120, 311), (70, 70), (54, 26), (150, 200), (88, 301)],
          [5, 13, 1, 32, 7, 2, 20, 9], seed=1)
    # The size rule: (10, 1600) after (330, 20) gives 1600*330 > 512000 (skipped); (40, 1500) passes
    # (1500*330 = 495000); then (400, 30) gives 400*1500 > 512000 (skipped); the last one fits.
    _case(out, "skip", [(330, 20), (10, 1600), (100, 50), (40, 1500), (400, 30), (12, 12)], [3, 4, 5, 6, 7, 8], seed=2)
    # A single sample (batch 1, as in CAN's evaluation).
    _case(out, "single", [(77, 190)], [11], seed=3)
