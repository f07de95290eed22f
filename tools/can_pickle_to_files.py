#!/usr/bin/env python3
"""Converts CAN's pickled CROHME (LBH1024/CAN: datasets/CROHME/*_images.pkl + *_labels.txt) to image files.

CAN ships each split as a pickle of {name: numpy uint8 array of shape (H, W)} (WAP's offline-*.pkl
hold (1, H, W) arrays; both work) plus a labels file with one `name<whitespace>tok tok ...` per line.
This writes PNG files (lossless, white ink on black exactly as stored) and a caption file that hmer
reads directly:

  --layout comer (default)   OUT/img/<name>.png + OUT/caption.txt        (Dataset::load_comer)
  --layout can               OUT/images/<name>.png + OUT/labels.txt      (Dataset::load_can)

Names follow CAN's dataset.py: a label key ending in "jpg" is cut at its first '.'. Every label must
have an image and every image a label (--allow-unmatched lists and skips them instead).

Examples:
  python3 tools/can_pickle_to_files.py --images datasets/CROHME/train_images.pkl \\
      --labels datasets/CROHME/train_labels.txt --out data/crohme/train
  python3 tools/can_pickle_to_files.py --demo /tmp/demo   # a tiny self-contained example

Unpickling runs code from the file: only convert pickles you trust. Needs numpy (to unpickle).
"""
import argparse
import os
import pathlib
import pickle
import struct
import sys
import zlib


def write_png_gray(path, rows):
    """Writes an 8-bit grayscale PNG from a list of bytes rows (no dependency beyond zlib)."""
    h = len(rows)
    w = len(rows[0]) if h else 0
    if h == 0 or w == 0:
        raise ValueError(f"{path}: empty image")
    raw = b"".join(b"\x00" + bytes(r) for r in rows)  # filter type 0 per row

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    tmp = str(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)


def to_rows(name, arr):
    """(H, W) or (1, H, W) uint8 array -> list of row bytes."""
    shape = getattr(arr, "shape", None)
    dtype = str(getattr(arr, "dtype", ""))
    if shape is None:
        raise ValueError(f"image '{name}': expected a numpy array, got {type(arr).__name__}")
    if len(shape) == 3 and shape[0] == 1:
        arr = arr[0]
        shape = arr.shape
    if len(shape) != 2:
        raise ValueError(f"image '{name}': expected shape (H, W) or (1, H, W), got {tuple(shape)}")
    if dtype != "uint8":
        raise ValueError(f"image '{name}': expected uint8 pixels, got {dtype}")
    return [arr[r].tobytes() for r in range(shape[0])]


def read_labels(path):
    labels = {}
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            name = parts[0]
            if name.endswith("jpg"):
                name = name.split(".")[0]
            if len(parts) < 2:
                raise ValueError(f"{path}:{ln}: the caption of '{name}' has no tokens")
            if name in labels:
                raise ValueError(f"{path}:{ln}: the name '{name}' appears twice")
            if "/" in name or "\\" in name or name in (".", ".."):
                raise ValueError(f"{path}:{ln}: '{name}' cannot be used as a file name")
            labels[name] = parts[1:]
    if not labels:
        raise ValueError(f"{path}: no labels")
    return labels


def convert(images_pkl, labels_txt, out, layout="comer", allow_unmatched=False):
    with open(images_pkl, "rb") as f:
        images = pickle.load(f)
    if not isinstance(images, dict):
        raise ValueError(f"{images_pkl}: expected a pickled dict {{name: array}}, got {type(images).__name__}")
    labels = read_labels(labels_txt)
    missing = sorted(n for n in labels if n not in images)
    extra = sorted(n for n in images if n not in labels)
    if (missing or extra) and not allow_unmatched:
        raise ValueError(f"{len(missing)} labels without an image (e.g. {missing[:5]}) and {len(extra)} images "
                         f"without a label (e.g. {extra[:5]}); --allow-unmatched skips them")
    out = pathlib.Path(out)
    img_dir = out / ("img" if layout == "comer" else "images")
    img_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, toks in labels.items():
        if name not in images:
            continue
        write_png_gray(img_dir / f"{name}.png", to_rows(name, images[name]))
        lines.append(f"{name}\t{' '.join(toks)}\n")
    cap = out / ("caption.txt" if layout == "comer" else "labels.txt")
    with open(cap, "w", encoding="utf-8") as f:
        f.writelines(lines)
    print(f"wrote {len(lines)} images to {img_dir} and {cap}" +
          (f"; skipped {len(missing)} labels without image, {len(extra)} images without label" if missing or extra
           else ""))
    return len(lines)


def demo(out):
    """A two-sample pickle and labels file in OUT/src, converted to OUT/comer. Pixel (r, c) of sample
    'a' (5 x 7) is (r * 7 + c * 3) % 256, of 'b_0' (3 x 4, stored (1, H, W)) 255 - (r + c)."""
    import numpy as np

    out = pathlib.Path(out)
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    r, c = np.mgrid[0:5, 0:7]
    a = ((r * 7 + c * 3) % 256).astype(np.uint8)
    r, c = np.mgrid[0:3, 0:4]
    b = (255 - (r + c)).astype(np.uint8)[None]
    with open(src / "images.pkl", "wb") as f:
        pickle.dump({"a": a, "b_0": b}, f)
    (src / "labels.txt").write_text("a x ^ { 2 }\nb_0.jpg \\frac { 1 } { 2 }\n", encoding="utf-8")
    return convert(src / "images.pkl", src / "labels.txt", out / "comer")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", help="the pickled {name: uint8 array} dict")
    ap.add_argument("--labels", help="the labels file (name<whitespace>tokens per line)")
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--layout", choices=["comer", "can"], default="comer")
    ap.add_argument("--allow-unmatched", action="store_true", help="skip labels without image and vice versa")
    ap.add_argument("--demo", metavar="DIR", help="write and convert a tiny example into DIR")
    args = ap.parse_args()
    try:
        if args.demo:
            demo(args.demo)
            return 0
        if not (args.images and args.labels and args.out):
            ap.error("--images, --labels and --out are required (or --demo DIR)")
        convert(args.images, args.labels, args.out, args.layout, args.allow_unmatched)
    except (ValueError, OSError, pickle.UnpicklingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
