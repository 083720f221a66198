#!/usr/bin/env python3
"""Generates the corpus of bad model files from ../shared/models/stories260K
(nothing of ../shared is committed): one or more files per row of
../shared/BAD-INPUTS.md that is about files, each with the status the loader
must return and a substring its message must contain.

    tests/bad_inputs/make_corpus.py <shared_dir> <out_dir>

Writes <out_dir>/<case>.gguf|.bin and <out_dir>/cases.tsv with the columns
    row  name  model  tokenizer  status  message  what
where model/tokenizer are file names in out_dir (tokenizer: a llama2.c
tokenizer.bin, or "-"), status a kestrel status name (bad_file, unsupported,
io_error, ...), and message a substring of the error message.
tests/test_bad_inputs.cpp runs every case through the library, the C API and
the CLI.
"""
import math
import os
import struct
import sys

# ---- a minimal GGUF model: parse, edit, write --------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B",
              U64: "<Q", I64: "<q", F64: "<d"}


class Reader:
    def __init__(self, b):
        self.b, self.o = b, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.o)[0]
        self.o += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.b[self.o:self.o + n]
        self.o += n
        return s

    def value(self, t):
        if t == STRING:
            return self.string()
        if t == ARRAY:
            et = self.take("<I")
            n = self.take("<Q")
            return (et, [self.value(et) for _ in range(n)])
        return self.take(SCALAR_FMT[t])


def enc_string(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("<Q", len(s)) + s


def enc_value(t, v):
    if t == STRING:
        return enc_string(v)
    if t == ARRAY:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(enc_value(et, x) for x in items)
    return struct.pack(SCALAR_FMT[t], v)


class Gguf:
    """kv: list of [key(bytes), type, value]; tensors: list of dicts; data: bytes."""

    def __init__(self, b):
        r = Reader(b)
        self.magic = r.take("<I")
        self.version = r.take("<I")
        n_t, n_kv = r.take("<Q"), r.take("<Q")
        self.kv = []
        for _ in range(n_kv):
            k = r.string()
            t = r.take("<I")
            self.kv.append([k, t, r.value(t)])
        self.tensors = []
        for _ in range(n_t):
            name = r.string()
            nd = r.take("<I")
            dims = [r.take("<Q") for _ in range(nd)]
            ty = r.take("<I")
            off = r.take("<Q")
            self.tensors.append({"name": name, "dims": dims, "type": ty, "offset": off})
        self.align = self.get("general.alignment", 32)
        self.data_start = (r.o + self.align - 1) // self.align * self.align
        self.data = b[self.data_start:]

    def get(self, key, default=None):
        for k, t, v in self.kv:
            if k == key.encode():
                return v
        return default

    def set(self, key, t, v):
        for e in self.kv:
            if e[0] == key.encode():
                e[1], e[2] = t, v
                return
        self.kv.append([key.encode(), t, v])

    def remove(self, key):
        self.kv = [e for e in self.kv if e[0] != key.encode()]

    def tensor(self, name):
        return next(t for t in self.tensors if t["name"] == name.encode())

    def header_bytes(self, n_tensors=None, n_kv=None):
        return struct.pack("<IIQQ", self.magic, self.version,
                           len(self.tensors) if n_tensors is None else n_tensors,
                           len(self.kv) if n_kv is None else n_kv)

    def meta_bytes(self):
        out = b""
        for k, t, v in self.kv:
            out += enc_string(k) + struct.pack("<I", t) + enc_value(t, v)
        return out

    def tensor_bytes(self):
        out = b""
        for t in self.tensors:
            out += enc_string(t["name"]) + struct.pack("<I", len(t["dims"]))
            out += b"".join(struct.pack("<Q", d) for d in t["dims"])
            out += struct.pack("<IQ", t["type"], t["offset"])
        return out

    def to_bytes(self, align=None):
        align = align or self.align
        head = self.header_bytes() + self.meta_bytes() + self.tensor_bytes()
        pad = (-len(head)) % align if align > 0 else 0
        return head + b"\0" * pad + self.data


# ---- the cases ---------------------------------------------------------------


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    shared, out = sys.argv[1], sys.argv[2]
    src = os.path.join(shared, "models", "stories260K")
    gguf_bytes = open(os.path.join(src, "stories260K.gguf"), "rb").read()
    ckpt = open(os.path.join(src, "stories260K.bin"), "rb").read()
    tokbin = open(os.path.join(src, "tok512.bin"), "rb").read()
    os.makedirs(out, exist_ok=True)
    cases = []

    def put(row, name, status, message, what, data, ext=".gguf", tokenizer="-"):
        fname = name + ext
        with open(os.path.join(out, fname), "wb") as f:
            f.write(data)
        cases.append((row, name, fname, tokenizer, status, message, what))

    def model(edit=None, align=None):
        g = Gguf(gguf_bytes)
        if edit:
            edit(g)
        return g.to_bytes(align)

    base = Gguf(gguf_bytes)
    assert model() == gguf_bytes, "the GGUF round trip must be exact before any edit means anything"
    head_len = 24
    meta_end = head_len + len(base.meta_bytes())
    tinfo_end = meta_end + len(base.tensor_bytes())
    # Offset of the 4th key's string bytes, and of the tokens array's 10th string.
    k3 = head_len + len(b"".join(enc_string(k) + struct.pack("<I", t) + enc_value(t, v) for k, t, v in base.kv[:3]))

    # Row 1: truncated anywhere.
    put(1, "trunc_header", "bad_file", "truncated at offset", "cut inside the header", gguf_bytes[:13])
    put(1, "trunc_key", "bad_file", "truncated at offset", "cut inside a key string", gguf_bytes[:k3 + 10])
    put(1, "trunc_strings", "bad_file", "truncated at offset", "cut inside the token strings",
        gguf_bytes[:head_len + 2000])
    put(1, "trunc_tensor_table", "bad_file", "truncated at offset", "cut inside the tensor table",
        gguf_bytes[:meta_end + 40])
    put(1, "trunc_data", "bad_file", "runs past the end of the file", "cut inside the tensor data",
        gguf_bytes[:len(gguf_bytes) - 100])
    put(1, "trunc_llama2c", "bad_file", "truncated: llama2.c", "llama2.c checkpoint cut short",
        ckpt[:len(ckpt) - 64], ".bin", "tok512.bin")
    put(1, "trunc_tokbin", "bad_file", "tokenizer.bin: truncated", "tokenizer.bin cut short",
        ckpt, ".bin", "trunc_tokbin.tok")
    with open(os.path.join(out, "trunc_tokbin.tok"), "wb") as f:
        f.write(tokbin[:len(tokbin) // 2])

    # Row 2: magic, version, byte order.
    put(2, "bad_magic", "bad_file", "not a GGUF file", "magic GGUX", b"GGUX" + gguf_bytes[4:])
    put(2, "version0", "bad_file", "invalid GGUF version 0", "version 0",
        gguf_bytes[:4] + struct.pack("<I", 0) + gguf_bytes[8:])
    put(2, "version1", "unsupported", "GGUF version 1", "version 1",
        gguf_bytes[:4] + struct.pack("<I", 1) + gguf_bytes[8:])
    put(2, "version99", "unsupported", "unknown GGUF version 99", "version 99",
        gguf_bytes[:4] + struct.pack("<I", 99) + gguf_bytes[8:])
    put(2, "byteswapped", "unsupported", "byte-swapped", "big-endian header",
        gguf_bytes[:4] + struct.pack(">I", 3) + struct.pack(">QQ", len(base.tensors), len(base.kv)) + gguf_bytes[24:])

    # Row 3: counts that are huge, negative as signed, or larger than the bytes left.
    put(3, "huge_tensor_count", "bad_file", "tensor count", "2^63 tensors",
        base.header_bytes(n_tensors=1 << 63) + gguf_bytes[24:])
    put(3, "negative_kv_count", "bad_file", "metadata key count", "-1 keys",
        base.header_bytes(n_kv=(1 << 64) - 1) + gguf_bytes[24:])
    put(3, "tensor_count_past_end", "bad_file", "truncated", "100000 tensor infos in a 1 MiB file",
        base.header_bytes(n_tensors=100000) + gguf_bytes[24:])
    b = bytearray(gguf_bytes)
    struct.pack_into("<Q", b, head_len, (1 << 62))  # first key's length
    put(3, "huge_key_length", "bad_file", "above the cap", "key length 2^62", bytes(b))
    b = bytearray(gguf_bytes)
    tok_key = next(i for i, e in enumerate(base.kv) if e[0] == b"tokenizer.ggml.tokens")
    tok_off = head_len + len(b"".join(enc_string(k) + struct.pack("<I", t) + enc_value(t, v)
                                      for k, t, v in base.kv[:tok_key]))
    count_off = tok_off + 8 + len(b"tokenizer.ggml.tokens") + 4 + 4
    struct.pack_into("<Q", b, count_off, (1 << 64) - 2)
    put(3, "huge_array_length", "bad_file", "array length", "token array of 2^64-2 strings", bytes(b))
    b = bytearray(gguf_bytes)
    struct.pack_into("<Q", b, count_off, 500000)
    put(3, "array_past_end", "bad_file", "truncated", "token array longer than the file", bytes(b))

    # Row 4: size arithmetic that overflows.
    def dims_overflow(g):
        g.tensor("output_norm.weight")["dims"] = [1 << 31, 1 << 31, 1 << 31, 2]
    put(4, "dims_product_overflow", "bad_file", "overflows", "dims product 2^94", model(dims_overflow))

    def offset_overflow(g):
        g.tensors[-1]["offset"] = (1 << 64) - 32
    put(4, "offset_overflow", "bad_file", "overflows", "last tensor at offset 2^64-32", model(offset_overflow))

    # Row 5: overlapping, holes, out of order, past the end.
    def overlap(g):
        g.tensors[1]["offset"] = g.tensors[0]["offset"]
    put(5, "overlap", "bad_file", "overlaps", "two tensors at the same offset", model(overlap))

    def hole(g):
        for t in g.tensors[1:]:
            t["offset"] += 64
        g.data += b"\0" * 64
    put(5, "hole", "bad_file", "hole", "64 unused bytes between tensors", model(hole))

    def order(g):
        # two neighbours of one shape (attn_k, attn_v): swapped, they neither overlap nor leave a hole
        i = next(k for k in range(len(g.tensors) - 1)
                 if g.tensors[k]["dims"] == g.tensors[k + 1]["dims"] and g.tensors[k]["type"] == g.tensors[k + 1]["type"])
        a, b = g.tensors[i], g.tensors[i + 1]
        a["offset"], b["offset"] = b["offset"], a["offset"]
    put(5, "out_of_order", "bad_file", "out of order", "two same-size tensors' offsets swapped", model(order))

    def past_end(g):
        g.tensors[-1]["dims"] = [64 * 4096]
    put(5, "past_end", "bad_file", "past the end of the file", "last tensor 1 MiB long, past the end",
        model(past_end))

    # Row 6: unknown value types, nested arrays, empty or duplicate keys, duplicate tensor names.
    b = bytearray(gguf_bytes)
    k0_type = head_len + 8 + len(base.kv[0][0])
    struct.pack_into("<I", b, k0_type, 13)
    put(6, "unknown_value_type", "bad_file", "unknown value type 13", "value type 13", bytes(b))
    put(6, "nested_array", "bad_file", "array of arrays",
        "an array of arrays", model(lambda g: g.kv.insert(1, [b"x.nested", ARRAY, (ARRAY, [])])))
    put(6, "empty_key", "bad_file", "empty key", "a key of length 0",
        model(lambda g: g.kv.insert(1, [b"", U32, 1])))
    put(6, "duplicate_key", "bad_file", "duplicate metadata key", "the tokens key twice",
        model(lambda g: g.kv.insert(2, list(g.kv[0]))))

    def dup_tensor(g):
        g.tensors[1]["name"] = g.tensors[0]["name"]
    put(6, "duplicate_tensor", "bad_file", "duplicate tensor name", "two tensors named alike", model(dup_tensor))

    # Row 7: known keys with the wrong type or width.
    put(7, "alignment_string", "bad_file", "general.alignment", "alignment as a string",
        model(lambda g: g.set("general.alignment", STRING, b"32")))
    put(7, "scores_as_bytes", "bad_file", "tokenizer.ggml.scores", "scores as u8",
        model(lambda g: g.set("tokenizer.ggml.scores", ARRAY, (U8, [0] * len(g.get("tokenizer.ggml.scores")[1])))))
    put(7, "bos_id_i64", "bad_file", "tokenizer.ggml.bos_token_id", "bos id as an i64 above 2^31",
        model(lambda g: g.set("tokenizer.ggml.bos_token_id", I64, 1 << 40)))
    put(7, "block_count_string", "bad_file", "llama.block_count", "block count as a string",
        model(lambda g: g.set("llama.block_count", STRING, b"5")))

    # Row 8: alignment 0, not a power of two, absurd.
    put(8, "alignment0", "bad_file", "general.alignment", "alignment 0",
        model(lambda g: g.set("general.alignment", U32, 0)))
    put(8, "alignment48", "bad_file", "not a power of two", "alignment 48",
        model(lambda g: g.set("general.alignment", U32, 48)))
    put(8, "alignment_1m", "bad_file", "above the cap", "alignment 1 MiB",
        model(lambda g: g.set("general.alignment", U32, 1 << 20)))

    # Row 9: tensor types, block multiples, dims.
    def ttype(v):
        def f(g):
            g.tensor("output_norm.weight")["type"] = v
        return f
    put(9, "tensor_type_unknown", "bad_file", "unknown type id 1234", "type 1234", model(ttype(1234)))
    put(9, "tensor_type_q8K", "unsupported", "q8_K", "q8_K (activation-only)", model(ttype(15)))

    def block_multiple(g):
        t = g.tensor("output_norm.weight")
        t["type"] = 8  # q8_0: blocks of 32
        t["dims"] = [40]
    put(9, "not_block_multiple", "bad_file", "not a multiple of", "q8_0 row of 40", model(block_multiple))

    def five_dims(g):
        g.tensor("output_norm.weight")["dims"] = [64, 1, 1, 1, 1]
    put(9, "five_dims", "bad_file", "has 5 dims", "5 dims", model(five_dims))

    def zero_dim(g):
        g.tensor("output_norm.weight")["dims"] = [0]
    put(9, "zero_dim", "bad_file", "equal to 0", "dim 0", model(zero_dim))

    def neg_dim(g):
        g.tensor("output_norm.weight")["dims"] = [(1 << 64) - 64]
    put(9, "negative_dim", "bad_file", "negative", "dim -64", model(neg_dim))

    # Row 10: hyperparameters that contradict the tensors.
    put(10, "zero_heads", "bad_file", "head_count", "0 heads",
        model(lambda g: g.set("llama.attention.head_count", U32, 0)))
    put(10, "head_dim_not_dividing", "bad_file", "head", "7 heads for 64 dims",
        model(lambda g: g.set("llama.attention.head_count", U32, 7)))
    put(10, "kv_heads_not_dividing", "bad_file", "do not divide", "3 kv heads for 8 heads",
        model(lambda g: g.set("llama.attention.head_count_kv", U32, 3)))

    def vocab_rows(g):
        g.tensor("token_embd.weight")["dims"][1] = 500
        g.tensor("token_embd.weight")
        # keep the data layout valid: shrink the data by the removed rows
        # (the next tensors' offsets move down)
        removed = 12 * 64 * 4
        t0 = g.tensors.index(g.tensor("token_embd.weight"))
        for t in g.tensors[t0 + 1:]:
            t["offset"] -= removed
        start = g.tensor("token_embd.weight")["offset"] + 500 * 64 * 4
        g.data = g.data[:start] + g.data[start + removed:]
    put(10, "vocab_rows_mismatch", "bad_file", "token_embd has 500 rows", "512 tokens, 500 embedding rows",
        model(vocab_rows))

    def missing_layer(g):
        t = g.tensor("blk.4.ffn_up.weight")
        t["name"] = b"blk.4.ffn_upx.weight"
    put(10, "missing_layer_tensor", "bad_file", "missing tensor 'blk.4.ffn_up.weight'", "a layer tensor renamed",
        model(missing_layer))
    put(10, "absurd_context", "bad_file", "context_length", "context length 2^40",
        model(lambda g: g.set("llama.context_length", U64, 1 << 40)))
    put(10, "too_many_layers", "bad_file", "missing tensor 'blk.5.", "block count 6, tensors for 5",
        model(lambda g: g.set("llama.block_count", U32, 6)))

    # Row 11: tokenizer metadata.
    put(11, "special_id_outside", "bad_file", "outside the vocabulary", "eos id 512 of 512",
        model(lambda g: g.set("tokenizer.ggml.eos_token_id", U32, 512)))

    def short_scores(g):
        et, items = g.get("tokenizer.ggml.scores")
        g.set("tokenizer.ggml.scores", ARRAY, (et, items[:100]))
    put(11, "scores_short", "bad_file", "tokenizer.ggml.scores has 100 entries", "100 scores for 512 tokens",
        model(short_scores))

    def bad_byte_token(g):
        et, items = g.get("tokenizer.ggml.tokens")
        items = list(items)
        types = g.get("tokenizer.ggml.token_type")[1]
        i = next(k for k, t in enumerate(types) if t == 6)
        items[i] = b"<0x-1>"
        g.set("tokenizer.ggml.tokens", ARRAY, (et, items))
    put(11, "byte_token_malformed", "bad_file", "malformed", "a byte token spelled <0x-1>", model(bad_byte_token))

    def bpe_bad_merge(g):
        g.set("tokenizer.ggml.model", STRING, b"gpt2")
        g.set("tokenizer.ggml.pre", STRING, b"gpt-2")
        g.set("tokenizer.ggml.merges", ARRAY, (STRING, [b"\xe2\x96\x81t he", b"nosuch token"]))
    put(11, "merge_unknown_token", "bad_file", "merge", "a merge naming unknown tokens", model(bpe_bad_merge))

    # Row 12: a chat template is data, never executed.
    put(12, "chat_template_jinja", "ok", "", "a hostile-looking chat template loads as plain metadata",
        model(lambda g: g.set("tokenizer.chat_template", STRING,
                              b"{% for x in range(10**9) %}{{ x.__class__.__mro__ }}{% endfor %}")))

    # Row 13: not a model at all.
    put(13, "html_page", "bad_file", "not a GGUF file", "an HTML page",
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body></body></html>\n")
    put(13, "empty_file", "bad_file", "empty", "0 bytes", b"")
    os.makedirs(os.path.join(out, "a_directory.gguf"), exist_ok=True)
    cases.append((13, "directory", "a_directory.gguf", "-", "io_error", "is a directory", "a directory"))
    cases.append((13, "missing_file", "no_such_file.gguf", "-", "io_error", "no_such_file.gguf",
                  "a path that does not exist"))
    put(13, "gguf_as_llama2c", "bad_file", "llama2.c", "a GGUF file given as a llama2.c checkpoint",
        gguf_bytes, ".bin", "tok512.bin")
    with open(os.path.join(out, "tok512.bin"), "wb") as f:
        f.write(tokbin)

    # llama2.c header rows (3, 4, 10).
    def ck(vals):
        return struct.pack("<7i", *vals) + ckpt[28:]
    hdr = list(struct.unpack_from("<7i", ckpt))
    put(3, "llama2c_negative_dim", "bad_file", "dim = -64 must be positive", "dim -64",
        ck([-64] + hdr[1:]), ".bin", "tok512.bin")
    put(4, "llama2c_huge_layers", "bad_file", "above the cap", "2^30 layers",
        ck(hdr[:2] + [1 << 30] + hdr[3:]), ".bin", "tok512.bin")
    put(10, "llama2c_heads", "bad_file", "not a multiple of n_heads", "dim 64, 7 heads",
        ck(hdr[:3] + [7] + hdr[4:]), ".bin", "tok512.bin")
    bad_tok = bytearray(tokbin)
    struct.pack_into("<f", bad_tok, 4, math.nan)
    with open(os.path.join(out, "nan_score.tok"), "wb") as f:
        f.write(bytes(bad_tok))
    put(11, "tokbin_nan_score", "bad_file", "non-finite score", "tokenizer.bin with a NaN score",
        ckpt, ".bin", "nan_score.tok")

    with open(os.path.join(out, "cases.tsv"), "w") as f:
        f.write("# row\tname\tmodel\ttokenizer\tstatus\tmessage\twhat\n")
        for c in cases:
            f.write("\t".join(str(x) for x in c) + "\n")
    print(f"{len(cases)} cases in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
