#!/usr/bin/env python3
"""Writes the PyTorch reference tensors the C++ tests compare against.

Run with Debian's interpreter, which has python3-torch:  /usr/bin/python3 tools/reference/generate.py --out DIR

Every module tools/reference/ref_<area>.py defines generate(out: pathlib.Path) and writes .npy
files into out/<area>/. Files are named <case>__<tensor>.npy (for example conv2d/k3p1__grad_x.npy).
A stamp file records the torch version so a stale directory is regenerated.
"""
import argparse
import importlib.util
import pathlib
import sys

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent


def save(out_dir: pathlib.Path, name: str, t) -> None:
    """Saves a tensor (or array) as <out_dir>/<name>.npy, keeping float32/float64/int64."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().contiguous().numpy()
    a = np.array(t, order="C")  # ascontiguousarray would turn a 0-d array into 1-d
    if a.dtype not in (np.float32, np.float64, np.int64):
        raise TypeError(f"{name}: unsupported dtype {a.dtype}")
    np.save(out_dir / f"{name}.npy", a)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--only", nargs="*", help="areas to generate (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    modules = sorted(HERE.glob("ref_*.py"))
    if not modules:
        print("no ref_*.py modules found", file=sys.stderr)
        return 1
    sys.path.insert(0, str(HERE))
    for path in modules:
        area = path.stem[len("ref_"):]
        if args.only and area not in args.only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        torch.manual_seed(0)
        mod.generate(args.out / area)
        print(f"reference: wrote {area}")
    (args.out / "STAMP").write_text(f"torch {torch.__version__}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
