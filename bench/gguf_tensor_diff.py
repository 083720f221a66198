#!/usr/bin/env python3
"""Compares the tensors of two GGUF files: type and data bytes, tensor by tensor.

    bench/gguf_tensor_diff.py A.gguf B.gguf [-v]

Prints one line per type: how many tensors of that type (in A) have byte-identical data in B,
and the names of those that differ (all of them with -v, else the first few). Tensors present
in one file only, or with another type or shape, are listed apart. Exit status 0 when every
tensor is identical. Standard library only (no numpy, no gguf package).
"""
import hashlib
import struct
import sys

# ggml type id -> (name, block size in elements, bytes per block)
TYPES = {
    0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20),
    6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 12: ("q4_K", 256, 144),
    13: ("q5_K", 256, 176), 14: ("q6_K", 256, 210), 30: ("bf16", 1, 2),
}
# GGUF metadata value type -> struct format of a scalar (8: string, 9: array)
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        vals = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals[0] if len(vals) == 1 else vals

    def string(self):
        n = self.take("Q")
        s = self.data[self.pos:self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return s

    def value(self, vtype):
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, n = self.take("I"), self.take("Q")
            return [self.value(etype) for _ in range(n)]
        return self.take(SCALARS[vtype])


def read_tensors(path):
    """name -> (type id, shape, sha256 of the data)"""
    with open(path, "rb") as f:
        data = f.read()
    r = Reader(data)
    if r.take("4s") != b"GGUF":
        sys.exit(f"{path}: not a GGUF file")
    version, n_tensors, n_kv = r.take("I"), r.take("Q"), r.take("Q")
    if version < 2:
        sys.exit(f"{path}: GGUF version {version} is not supported")
    alignment = 32
    for _ in range(n_kv):
        key = r.string()
        val = r.value(r.take("I"))
        if key == "general.alignment":
            alignment = val
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.take("I")
        shape = tuple(r.take("Q") for _ in range(n_dims))
        ttype, offset = r.take("I"), r.take("Q")
        infos.append((name, ttype, shape, offset))
    base = (r.pos + alignment - 1) // alignment * alignment
    out = {}
    for name, ttype, shape, offset in infos:
        if ttype not in TYPES:
            sys.exit(f"{path}: tensor {name} has type {ttype}, unknown here")
        _, block, block_bytes = TYPES[ttype]
        n = 1
        for d in shape:
            n *= d
        size = n // block * block_bytes
        out[name] = (ttype, shape, hashlib.sha256(data[base + offset:base + offset + size]).hexdigest())
    return out


def main():
    args = [a for a in sys.argv[1:] if a != "-v"]
    verbose = "-v" in sys.argv[1:]
    if len(args) != 2:
        sys.exit(__doc__)
    a, b = read_tensors(args[0]), read_tensors(args[1])
    per_type = {}
    apart = []
    for name, (ttype, shape, digest) in a.items():
        if name not in b:
            apart.append(f"{name}: only in {args[0]}")
            continue
        btype, bshape, bdigest = b[name]
        if btype != ttype or bshape != shape:
            apart.append(f"{name}: {TYPES[ttype][0]} {shape} vs {TYPES[btype][0]} {bshape}")
            continue
        same, differ = per_type.setdefault(TYPES[ttype][0], ([], []))
        (same if digest == bdigest else differ).append(name)
    apart += [f"{name}: only in {args[1]}" for name in b if name not in a]
    ok = not apart
    for tname, (same, differ) in sorted(per_type.items()):
        line = f"{tname}: {len(same)} / {len(same) + len(differ)} tensors identical"
        if differ:
            ok = False
            shown = differ if verbose else differ[:4]
            line += "; differ: " + ", ".join(shown) + (" ..." if len(shown) < len(differ) else "")
        print(line)
    for line in apart:
        print(line)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
