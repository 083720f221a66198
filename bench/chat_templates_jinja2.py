#!/usr/bin/env python3
"""Expected renderings of a GGUF's own chat template by Python's jinja2.

  bench/chat_templates_jinja2.py MODEL.gguf MESSAGES.json OUT.json

Reads tokenizer.chat_template and the BOS / EOS token texts from the GGUF
metadata with a small reader of its own (not kestrel's), then renders the
template over each message list of MESSAGES.json (a JSON list of lists of
{role, content}) with add_generation_prompt false and true, set up as Hugging
Face transformers renders chat templates (tests/data/chat/render_jinja2.py).
OUT.json: a list of {"messages": i, "add_generation_prompt": b, "ok": ...,
"text" | "error": ...}. The template's source goes to OUT.json's sibling
OUT.json.jinja.
"""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "chat"))
import render_jinja2  # noqa: E402

# GGUF value types: sizes of the fixed-width ones.
FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9


def read_gguf_metadata(path, wanted):
    """The metadata values named in `wanted` (strings, numbers, or arrays of strings)."""
    out = {}
    with open(path, "rb") as f:
        magic, version = struct.unpack("<4sI", f.read(8))
        if magic != b"GGUF" or version < 2:
            raise SystemExit(f"{path}: not a GGUF v2+ file")
        _n_tensors, n_kv = struct.unpack("<QQ", f.read(16))

        def read_str():
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8", errors="surrogateescape")

        def read_value(t, keep):
            if t in FIXED:
                fmt = "<" + FIXED[t]
                v = struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
                return v
            if t == STRING:
                return read_str()
            if t == ARRAY:
                et, n = struct.unpack("<IQ", f.read(12))
                if et in FIXED:
                    size = struct.calcsize("<" + FIXED[et])
                    if not keep:
                        f.seek(size * n, 1)
                        return None
                    return list(struct.unpack("<" + FIXED[et] * n, f.read(size * n)))
                return [read_value(et, keep) for _ in range(n)]
            raise SystemExit(f"{path}: unknown GGUF value type {t}")

        for _ in range(n_kv):
            key = read_str()
            (t,) = struct.unpack("<I", f.read(4))
            keep = key in wanted
            v = read_value(t, keep)
            if keep:
                out[key] = v
    return out


def main():
    model, messages_path, out_path = sys.argv[1:4]
    meta = read_gguf_metadata(
        model,
        {"tokenizer.chat_template", "tokenizer.ggml.tokens", "tokenizer.ggml.bos_token_id",
         "tokenizer.ggml.eos_token_id"},
    )
    if "tokenizer.chat_template" not in meta:
        raise SystemExit(f"{model}: no tokenizer.chat_template")
    tokens = meta.get("tokenizer.ggml.tokens", [])

    def token_text(key):
        i = meta.get(key)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else ""

    src = meta["tokenizer.chat_template"]
    with open(out_path + ".jinja", "w", encoding="utf-8", newline="") as f:
        f.write(src)
    env = render_jinja2.make_env()
    tmpl = env.from_string(src)
    corpus = json.load(open(messages_path, encoding="utf-8"))
    results = []
    for i, msgs in enumerate(corpus):
        for gen in (False, True):
            r = {"messages": i, "add_generation_prompt": gen}
            try:
                r["text"] = tmpl.render(messages=msgs, add_generation_prompt=gen,
                                        bos_token=token_text("tokenizer.ggml.bos_token_id"),
                                        eos_token=token_text("tokenizer.ggml.eos_token_id"))
                r["ok"] = True
            except Exception as e:  # the template refused this conversation: kestrel must refuse too
                r["ok"] = False
                r["error"] = f"{type(e).__name__}: {e}"
            results.append(r)
    json.dump(results, open(out_path, "w", encoding="utf-8"), ensure_ascii=True)


if __name__ == "__main__":
    main()
