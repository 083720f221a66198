"""Writes a synthetic GGUF model that carries a chat template, for the server tests.

The vocabulary (a 512-token SentencePiece vocabulary with <s> and </s>) is read
from stories260K.gguf; the weights are random Q8_0 (so a token's logits do not
depend on the batch it is decoded in) drawn from a fixed seed, so every run
tests the same model in llama's tensor layout, sized so that
generation takes a measurable time (a slot stays busy while a test acts).

    python3 synth_chat_model.py STORIES260K.gguf OUT.gguf
"""
import random
import struct
import sys

# Role lines between the vocabulary's own control tokens.
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m.role }}\n{{ m.content }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)

N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, N_FF, N_CTX = 256, 4, 4, 2, 768, 8192
GGUF_F32, GGUF_Q8_0 = 0, 8
T_U32, T_STRING, T_ARRAY, T_F32 = 4, 8, 9, 6
FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class Reader:
    def __init__(self, data):
        self.d, self.at = data, 0

    def take(self, n):
        b = self.d[self.at:self.at + n]
        self.at += n
        return b

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def string(self):
        return self.take(self.u64()).decode("utf-8")

    def skip_value(self, t):
        if t in FIXED:
            self.take(FIXED[t])
        elif t == T_STRING:
            self.take(self.u64())
        elif t == T_ARRAY:
            et, n = self.u32(), self.u64()
            for _ in range(n):
                self.skip_value(et)
        else:
            raise ValueError(f"unknown GGUF value type {t}")


def tokenizer_kvs(path):
    """The tokenizer.* entries of a GGUF file as (key, type, raw value bytes)."""
    r = Reader(open(path, "rb").read())
    if r.take(4) != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    r.u32()
    r.u64()
    n_kv = r.u64()
    out = []
    for _ in range(n_kv):
        key = r.string()
        t = r.u32()
        start = r.at
        r.skip_value(t)
        if key.startswith("tokenizer."):
            out.append((key, t, r.d[start:r.at]))
    return out


def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def kv(key, t, raw):
    return gguf_string(key) + struct.pack("<I", t) + raw


def q8_0(rng, n_elems, scale):
    # Blocks of an f16 scale and 32 random int8 quants (uniform: std ~74 * scale).
    d = struct.pack("<e", scale / 74.0)
    rnd = rng.randbytes(n_elems)
    return b"".join(d + rnd[i:i + 32] for i in range(0, n_elems, 32))


def f32_ones(n):
    return struct.pack(f"<{n}f", *([1.0] * n))


def write(stories_path, out_path, seed=1):
    rng = random.Random(seed)
    vocab = tokenizer_kvs(stories_path)
    n_vocab = next(struct.unpack("<IQ", raw[:12])[1] for k, t, raw in vocab if k == "tokenizer.ggml.tokens")
    head_dim = N_EMBD // N_HEAD
    kvs = [
        kv("general.architecture", T_STRING, gguf_string("llama")),
        kv("general.name", T_STRING, gguf_string("kestrel-server-test-chat")),
        kv("general.alignment", T_U32, struct.pack("<I", 32)),
        kv("llama.context_length", T_U32, struct.pack("<I", N_CTX)),
        kv("llama.embedding_length", T_U32, struct.pack("<I", N_EMBD)),
        kv("llama.feed_forward_length", T_U32, struct.pack("<I", N_FF)),
        kv("llama.block_count", T_U32, struct.pack("<I", N_LAYER)),
        kv("llama.attention.head_count", T_U32, struct.pack("<I", N_HEAD)),
        kv("llama.attention.head_count_kv", T_U32, struct.pack("<I", N_HEAD_KV)),
        kv("llama.rope.dimension_count", T_U32, struct.pack("<I", head_dim)),
        kv("llama.attention.layer_norm_rms_epsilon", T_F32, struct.pack("<f", 1e-5)),
    ] + [kv(k, t, raw) for k, t, raw in vocab]
    kvs.append(kv("tokenizer.chat_template", T_STRING, gguf_string(CHAT_TEMPLATE)))

    n_kv_embd = head_dim * N_HEAD_KV
    tensors = [("token_embd.weight", GGUF_Q8_0, (N_EMBD, n_vocab)), ("output_norm.weight", GGUF_F32, (N_EMBD,)),
               ("output.weight", GGUF_Q8_0, (N_EMBD, n_vocab))]
    for i in range(N_LAYER):
        p = f"blk.{i}."
        tensors += [(p + "attn_norm.weight", GGUF_F32, (N_EMBD,)), (p + "attn_q.weight", GGUF_Q8_0, (N_EMBD, N_EMBD)),
                    (p + "attn_k.weight", GGUF_Q8_0, (N_EMBD, n_kv_embd)),
                    (p + "attn_v.weight", GGUF_Q8_0, (N_EMBD, n_kv_embd)),
                    (p + "attn_output.weight", GGUF_Q8_0, (N_EMBD, N_EMBD)), (p + "ffn_norm.weight", GGUF_F32, (N_EMBD,)),
                    (p + "ffn_gate.weight", GGUF_Q8_0, (N_EMBD, N_FF)), (p + "ffn_up.weight", GGUF_Q8_0, (N_EMBD, N_FF)),
                    (p + "ffn_down.weight", GGUF_Q8_0, (N_FF, N_EMBD))]
    infos, blobs, offset = [], [], 0
    for name, t, ne in tensors:
        n = 1
        for x in ne:
            n *= x
        data = f32_ones(n) if t == GGUF_F32 else q8_0(rng, n, 1.0 / ne[0] ** 0.5)
        infos.append(gguf_string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", x) for x in ne) +
                     struct.pack("<IQ", t, offset))
        pad = (-len(data)) % 32
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(infos)
    header += b"\0" * ((-len(header)) % 32)
    with open(out_path, "wb") as f:
        f.write(header)
        for b in blobs:
            f.write(b)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    write(sys.argv[1], sys.argv[2])
