"""Tensor files written by other tools, for tests/test_serialization.cpp (numpy only, no torch).

generate(out) writes, into out/ (= <ref dir>/serialization):
  * .npy files from np.save: C order, Fortran order (2-d and 4-d), 0-d, 1-d, empty, format
    version 2.0, and float64 special values;
  * .safetensors files from the minimal writer below, which follows the format description
    (u64 little-endian header size, JSON header {name: {dtype, shape, data_offsets}} plus an optional
    "__metadata__" str->str map, then the raw little-endian bytes), with and without padding.
Every array is a closed-form function of its index (see the _values_* helpers), so the C++ test
computes the expected values itself instead of trusting a second reader.

Run as a script with --verify-cpp DIR to check the files the C++ test wrote into DIR (the other
direction of the round trip); it exits non-zero with a message on the first mismatch.
"""
import argparse
import json
import pathlib
import struct
import sys

import numpy as np

ST_DTYPES = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i8"): "I64"}
NP_DTYPES = {v: k for k, v in ST_DTYPES.items()}


# ---- the closed-form contents (mirrored in tests/test_serialization.cpp) ----------------------------

def _values_affine(shape, dtype, scale, shift):
    """Element i (row-major flat index) = i * scale + shift, exact in float32 for the sizes used."""
    n = int(np.prod(shape, dtype=np.int64))
    return (np.arange(n, dtype=np.float64) * scale + shift).astype(dtype).reshape(shape)


F64_SPECIALS = [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308, 0.1, -2.5]
I64_BIG = [-(2**63), -(2**40) - 3, -1, 0, 1, 2**53 + 1, 2**63 - 1]


def write_safetensors(path, tensors, metadata=None, align=8, order=None):
    """Minimal safetensors writer: tensors is a list of (name, array) in data order. The JSON keys
    are written in `order` (default: sorted by name), which need not be the data order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, a in tensors:
        a = np.array(a, order="C")  # ascontiguousarray would turn a 0-d array into 1-d
        if a.dtype not in ST_DTYPES:
            raise TypeError(f"{name}: dtype {a.dtype} not supported")
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
        header[name] = {"dtype": ST_DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    keys = order if order is not None else sorted(k for k in header if k != "__metadata__")
    if "__metadata__" in header:
        keys = ["__metadata__"] + [k for k in keys if k != "__metadata__"]
    js = json.dumps({k: header[k] for k in keys}, separators=(",", ":")).encode("utf-8")
    if align > 1:
        js += b" " * ((-len(js)) % align)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Strict reader for --verify-cpp: checks the layout rules a third-party loader relies on."""
    buf = pathlib.Path(path).read_bytes()
    if len(buf) < 8:
        raise ValueError(f"{path}: shorter than 8 bytes")
    (n,) = struct.unpack("<Q", buf[:8])
    if 8 + n > len(buf):
        raise ValueError(f"{path}: header size {n} past the end")
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    data = buf[8 + n:]
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{path}: __metadata__ values must be strings")
    out, spans = {}, []
    for name, e in header.items():
        dt = NP_DTYPES[e["dtype"]]
        b, end = e["data_offsets"]
        shape = tuple(e["shape"])
        if end - b != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
            raise ValueError(f"{path}: {name}: offsets {b}..{end} do not match shape {shape} {dt}")
        spans.append((b, end))
        out[name] = np.frombuffer(data[b:end], dtype=dt).reshape(shape)
    # The data section must be covered exactly, without holes or overlaps (as the Rust reader checks).
    pos = 0
    for b, end in sorted(spans):
        if b != pos:
            raise ValueError(f"{path}: data hole or overlap at byte {pos} (next tensor starts at {b})")
        pos = end
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} trailing data bytes not owned by any tensor")
    return out, metadata


def generate(out):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # ---- numpy's own writer ----
    np.save(out / "npy_c_f32.npy", _values_affine((2, 3, 4), np.float32, 0.5, -3.0))
    f2 = np.asfortranarray(_values_affine((3, 5), np.float64, 1.5, -2.0))
    assert f2.flags.f_contiguous and not f2.flags.c_contiguous
    np.save(out / "npy_fortran_f64.npy", f2)
    f4 = np.asfortranarray(_values_affine((2, 3, 4, 5), np.float32, 0.25, 1.0))
    np.save(out / "npy_fortran_4d_f32.npy", f4)
    np.save(out / "npy_0d_i64.npy", np.array(-42, dtype=np.int64))
    np.save(out / "npy_0d_f64.npy", np.array(3.25, dtype=np.float64))
    np.save(out / "npy_1d_i64.npy", np.array(I64_BIG, dtype=np.int64))
    np.save(out / "npy_empty_f32.npy", np.zeros((0, 3), dtype=np.float32))
    np.save(out / "npy_specials_f64.npy", np.array(F64_SPECIALS, dtype=np.float64))
    with open(out / "npy_v2_f64.npy", "wb") as f:
        np.lib.format.write_array(f, _values_affine((4, 2), np.float64, -0.75, 10.0), version=(2, 0))
    # float16 is valid .npy that hmer does not support: the error must name the dtype and file.
    np.save(out / "npy_f16.npy", np.zeros((2,), dtype=np.float16))
    # ---- safetensors from the writer above ----
    tensors = [
        ("weight", _values_affine((2, 3), np.float32, 0.5, -1.0)),
        ("bias", np.array([0.1, -0.2, 1e300], dtype=np.float64)),
        ("step", np.array(123456789012, dtype=np.int64)),
        ("ids", np.array(I64_BIG, dtype=np.int64)),
        ("conv.w", _values_affine((4, 3, 2, 2), np.float32, -0.125, 2.0)),
        ("empty", np.zeros((0, 4), dtype=np.float32)),
    ]
    # Keys sorted by name, data in the list order: the reader must order tensors by offset.
    write_safetensors(out / "st_mixed.safetensors", tensors, metadata={"format": "pt", "epoch": "7"})
    write_safetensors(out / "st_unpadded.safetensors", tensors[:2], align=1)
    write_safetensors(out / "st_nometa.safetensors", [("x", _values_affine((5,), np.float64, 1.0, 0.0))])


# ---- the other direction: files written by the C++ test ---------------------------------------------

def _expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def _same(a, b):
    """Bitwise equality (NaN-aware) of two arrays including dtype and shape."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def verify_cpp(d):
    d = pathlib.Path(d)
    a = np.load(d / "cpp_f32_2x3.npy")
    _expect(_same(a, _values_affine((2, 3), np.float32, 0.5, -1.0)), f"cpp_f32_2x3.npy: got {a!r}")
    a = np.load(d / "cpp_transposed_f64.npy")
    _expect(_same(a, np.array(_values_affine((3, 4), np.float64, 1.0, 0.0).T, order="C")),
            f"cpp_transposed_f64.npy: got {a!r}")
    a = np.load(d / "cpp_0d_f64.npy")
    _expect(_same(a, np.array(2.5, dtype=np.float64)), f"cpp_0d_f64.npy: got {a!r} shape {a.shape}")
    a = np.load(d / "cpp_1d_i64.npy")
    _expect(_same(a, np.array(I64_BIG, dtype=np.int64)), f"cpp_1d_i64.npy: got {a!r}")
    a = np.load(d / "cpp_empty_f32.npy")
    _expect(_same(a, np.zeros((0, 3), dtype=np.float32)), f"cpp_empty_f32.npy: got {a!r} shape {a.shape}")
    a = np.load(d / "cpp_specials_f64.npy")
    _expect(_same(a, np.array(F64_SPECIALS, dtype=np.float64)), f"cpp_specials_f64.npy: got {a!r}")
    for name in ["cpp_f32_2x3.npy", "cpp_0d_f64.npy"]:
        raw = (d / name).read_bytes()
        hl = struct.unpack("<H", raw[8:10])[0]
        _expect((10 + hl) % 64 == 0, f"{name}: data offset {10 + hl} is not 64-byte aligned")
    t, md = read_safetensors(d / "cpp_mixed.safetensors")
    _expect(md == {"epoch": "7", "note": "written by hmer"}, f"cpp_mixed.safetensors: metadata {md!r}")
    _expect(set(t) == {"weight", "bias", "step", "empty"}, f"cpp_mixed.safetensors: names {sorted(t)}")
    _expect(_same(t["weight"], _values_affine((2, 3), np.float32, 0.5, -1.0)), f"weight: {t['weight']!r}")
    _expect(_same(t["bias"], np.array([0.1, -0.2, 1e300], dtype=np.float64)), f"bias: {t['bias']!r}")
    _expect(_same(t["step"], np.array(42, dtype=np.int64)), f"step: {t['step']!r}")
    _expect(_same(t["empty"], np.zeros((0, 4), dtype=np.float32)), f"empty: {t['empty']!r}")
    raw = (d / "cpp_mixed.safetensors").read_bytes()
    _expect(struct.unpack("<Q", raw[:8])[0] % 8 == 0, "cpp_mixed.safetensors: header not padded to 8 bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verify-cpp", type=pathlib.Path, help="directory with the files the C++ test wrote")
    ap.add_argument("--out", type=pathlib.Path, help="write the reference files here (as generate.py does)")
    args = ap.parse_args()
    if args.out:
        generate(args.out)
    if args.verify_cpp:
        try:
            verify_cpp(args.verify_cpp)
        except (AssertionError, ValueError, KeyError, OSError) as e:
            print(f"verify-cpp FAILED: {e}", file=sys.stderr)
            return 1
        print("verify-cpp OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
