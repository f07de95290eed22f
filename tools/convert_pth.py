#!/usr/bin/env python3
"""Converts an official CAN checkpoint (.pth) to safetensors and back, with the official names.

The official training saves `torch.save({'model': state_dict}, path)` (plus 'optimizer' when
optimizer_save is set, which is dropped here); a bare state_dict or a DataParallel 'module.' prefix
is accepted too. The safetensors side is the format hmer reads and writes (core/serialization.h):

    u64 little-endian header length N | N bytes of JSON {name: {dtype, shape, data_offsets}, ...,
    "__metadata__": {str: str}} padded with spaces to a multiple of 8 | raw little-endian data

written here by hand with struct + json (no safetensors package), keeping the state_dict order in
the data section. Dtypes: float32 (F32), float64 (F64), int64 (I64: BatchNorm's num_batches_tracked).

    convert_pth.py to-safetensors CAN.pth CAN.safetensors [--expect-entries 636]
    convert_pth.py to-pth CAN.safetensors CAN.pth
"""
import argparse
import collections
import json
import pathlib
import struct
import sys

import numpy as np

_NP_TO_ST = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("int64"): "I64"}
_ST_TO_NP = {v: k for k, v in _NP_TO_ST.items()}


def write_safetensors(path, tensors, metadata=None):
    """Writes an ordered mapping name -> numpy array (or torch tensor) as safetensors."""
    header = collections.OrderedDict()
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        if hasattr(t, "detach"):
            t = t.detach().cpu().contiguous().numpy()
        a = np.asarray(t, order="C")  # (ascontiguousarray would turn a 0-d scalar into 1-d)
        if a.dtype not in _NP_TO_ST:
            raise TypeError(f"{name}: unsupported dtype {a.dtype} (float32, float64, int64 only)")
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
        header[name] = {"dtype": _NP_TO_ST[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    tmp.replace(path)


def read_safetensors(path):
    """Returns (OrderedDict name -> numpy array in data order, metadata dict)."""
    data = pathlib.Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} exceeds the file size {len(data)}")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    body = data[8 + n:]
    out = collections.OrderedDict()
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        dt = _ST_TO_NP.get(info["dtype"])
        if dt is None:
            raise ValueError(f"{path}: {name} has unsupported dtype {info['dtype']}")
        a, b = info["data_offsets"]
        shape = tuple(info["shape"])
        count = int(np.prod(shape)) if shape else 1
        if b - a != count * dt.itemsize or b > len(body):
            raise ValueError(f"{path}: {name}: data_offsets {a}..{b} do not hold {shape} {info['dtype']}")
        out[name] = np.frombuffer(body[a:b], dtype=dt.newbyteorder("<")).astype(dt).reshape(shape)
    return out, meta


def state_dict_from_checkpoint(obj):
    """The model state_dict inside an official checkpoint object."""
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ValueError("checkpoint holds no state_dict (expected {'model': state_dict} or a state_dict)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = collections.OrderedDict((k[len("module."):], v) for k, v in obj.items())
    return obj


def pth_to_safetensors(src, dst, expect_entries=None):
    import torch
    ckpt = torch.load(src, map_location="cpu")
    sd = state_dict_from_checkpoint(ckpt)
    if expect_entries is not None and len(sd) != expect_entries:
        raise ValueError(f"{src}: {len(sd)} state_dict entries, expected {expect_entries}")
    write_safetensors(dst, sd, {"format": "pt", "source": pathlib.Path(src).name})
    return len(sd)


def safetensors_to_pth(src, dst):
    import torch
    tensors, _ = read_safetensors(src)
    sd = collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in tensors.items())
    torch.save({"model": sd}, dst)
    return len(sd)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("to-safetensors", help="official .pth -> safetensors")
    a.add_argument("src")
    a.add_argument("dst")
    a.add_argument("--expect-entries", type=int, help="fail unless the state_dict has this many entries (CAN: 636)")
    b = sub.add_parser("to-pth", help="safetensors -> official-style .pth ({'model': state_dict})")
    b.add_argument("src")
    b.add_argument("dst")
    args = ap.parse_args()
    if args.cmd == "to-safetensors":
        n = pth_to_safetensors(args.src, args.dst, args.expect_entries)
    else:
        n = safetensors_to_pth(args.src, args.dst)
    print(f"wrote {args.dst}: {n} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
