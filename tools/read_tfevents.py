#!/usr/bin/env python3
"""Independent reader for TensorBoard event files (TFRecord framing + tensorflow.Event protobuf).

Written from the format description only (no TensorFlow, no protobuf package, no code shared with
the C++ writer in train/tensorboard.cpp), so that a test reading the engine's files back checks the
writer against a second implementation:
  record = u64 length | u32 masked CRC32C(length) | data | u32 masked CRC32C(data)
  masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2^32); CRC32C = Castagnoli, reflected 0x82F63B78.

Usage:
  read_tfevents.py FILE_OR_DIR...          prints "tag<TAB>step<TAB>value" per scalar
  read_tfevents.py --json FILE_OR_DIR...   prints {"files": [{path, records, file_version, session_starts, scalars}]}
  read_tfevents.py --selftest              checks CRC32C against its known answer
Exit status 1 (with a message on stderr) on any framing, CRC or protobuf error.
"""
import json
import os
import struct
import sys


def _make_table():
    table = []
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for byte in data:
        c = (c >> 8) ^ _TABLE[(c ^ byte) & 0xFF]
    return c ^ 0xFFFFFFFF


def masked_crc32c(data):
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


class FormatError(Exception):
    pass


def read_records(path):
    """Yields the data of each TFRecord, verifying both CRCs."""
    with open(path, "rb") as f:
        blob = f.read()
    pos = 0
    index = 0
    while pos < len(blob):
        if len(blob) - pos < 12:
            raise FormatError(f"{path}: record {index} at byte {pos}: truncated header")
        header = blob[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (len_crc,) = struct.unpack("<I", blob[pos + 8:pos + 12])
        if masked_crc32c(header) != len_crc:
            raise FormatError(f"{path}: record {index} at byte {pos}: length CRC mismatch")
        start = pos + 12
        end = start + length
        if end + 4 > len(blob):
            raise FormatError(f"{path}: record {index} at byte {pos}: truncated data ({length} bytes announced)")
        data = blob[start:end]
        (data_crc,) = struct.unpack("<I", blob[end:end + 4])
        if masked_crc32c(data) != data_crc:
            raise FormatError(f"{path}: record {index} at byte {pos}: data CRC mismatch")
        yield data
        pos = end + 4
        index += 1


def _varint(buf, pos):
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise FormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise FormatError("varint too long")


def parse_fields(buf):
    """Protobuf wire format -> list of (field_number, wire_type, value)."""
    fields = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise FormatError("truncated fixed64")
            value = buf[pos:pos + 8]
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise FormatError("truncated length-delimited field")
            value = buf[pos:pos + n]
            pos += n
        elif wire == 5:
            if pos + 4 > len(buf):
                raise FormatError("truncated fixed32")
            value = buf[pos:pos + 4]
            pos += 4
        else:
            raise FormatError(f"unsupported wire type {wire}")
        fields.append((field, wire, value))
    return fields


def _int64(v):
    return v - (1 << 64) if v >= (1 << 63) else v


def parse_event(data):
    event = {"wall_time": None, "step": 0}
    for field, wire, value in parse_fields(data):
        if field == 1 and wire == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2 and wire == 0:
            event["step"] = _int64(value)
        elif field == 3 and wire == 2:
            event["file_version"] = value.decode("utf-8")
        elif field == 5 and wire == 2:
            values = []
            for f2, w2, v2 in parse_fields(value):
                if f2 != 1 or w2 != 2:
                    continue
                item = {}
                for f3, w3, v3 in parse_fields(v2):
                    if f3 == 1 and w3 == 2:
                        item["tag"] = v3.decode("utf-8")
                    elif f3 == 2 and w3 == 5:
                        item["simple_value"] = struct.unpack("<f", v3)[0]
                values.append(item)
            event["summary"] = values
        elif field == 7 and wire == 2:
            status = 0
            for f2, w2, v2 in parse_fields(value):
                if f2 == 1 and w2 == 0:
                    status = v2
            event["session_log"] = {1: "START", 2: "STOP", 3: "CHECKPOINT"}.get(status, "UNSPECIFIED")
    return event


def read_file(path):
    """Returns {"path", "records", "file_version", "events", "scalars": [(tag, step, value)], "session_starts"}."""
    events = [parse_event(d) for d in read_records(path)]
    out = {"path": path, "records": len(events), "file_version": None, "events": events, "scalars": [],
           "session_starts": []}
    if events and "file_version" in events[0]:
        out["file_version"] = events[0]["file_version"]
    for e in events:
        for v in e.get("summary", []):
            if "tag" in v and "simple_value" in v:
                out["scalars"].append((v["tag"], e["step"], v["simple_value"]))
        if e.get("session_log") == "START":
            out["session_starts"].append(e["step"])
    return out


def read_scalars(path):
    """(tag, step, value) for every scalar of a file, in file order."""
    return read_file(path)["scalars"]


def _expand(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, n) for n in os.listdir(p) if "tfevents" in n)
        else:
            files.append(p)
    return files


def main(argv):
    as_json = "--json" in argv
    if "--selftest" in argv:
        got = crc32c(b"123456789")
        if got != 0xE3069283:
            print(f"crc32c selftest FAILED: {got:#010x}", file=sys.stderr)
            return 1
        print("crc32c selftest ok 0xe3069283")
        return 0
    paths = _expand([a for a in argv if not a.startswith("--")])
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        results = [read_file(p) for p in paths]
    except (FormatError, OSError, UnicodeDecodeError, struct.error) as e:
        print(f"read_tfevents: {e}", file=sys.stderr)
        return 1
    if as_json:
        payload = [{"path": r["path"], "records": r["records"], "file_version": r["file_version"],
                    "session_starts": r["session_starts"],
                    "scalars": [{"tag": t, "step": s, "value": v} for t, s, v in r["scalars"]]} for r in results]
        print(json.dumps({"files": payload}))
    else:
        for r in results:
            for t, s, v in r["scalars"]:
                print(f"{t}\t{s}\t{v!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
