"""/v1/chat/completions on a synthetic model whose GGUF carries a chat template."""
import concurrent.futures
import json
import urllib.request

import pytest

pytestmark = pytest.mark.timeout(120)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}]
# Tests that need a reply of a given length ask the server to go on past end-of-generation
# tokens: whether the random model samples one early is not what they test.
NO_EOS = {"ignore_eos": True}


def post(server, path, body):
    req = urllib.request.Request(server.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_apply_template_uses_the_gguf_template(chat):
    out = post(chat, "/apply-template", {"messages": [{"role": "user", "content": "hi"}]})
    assert out["prompt"] == "<s>user\nhi</s><s>assistant\n"


def test_chat_shape(chat):
    r = chat.client().chat.completions.create(model="synth-chat", messages=MESSAGES, max_tokens=16, temperature=0)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "synth-chat"
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str) and c.message.content
    assert c.finish_reason in ("length", "stop")
    assert r.usage.completion_tokens <= 16
    # The prompt is the template's rendering, tokenized with its control tokens.
    rendered = post(chat, "/apply-template", {"messages": MESSAGES})["prompt"]
    ids = post(chat, "/tokenize", {"content": rendered, "add_special": False})["tokens"]
    assert r.usage.prompt_tokens in (len(ids), len(ids) + 1)  # + BOS when the template has none


def test_chat_max_completion_tokens_and_text_parts(chat):
    r = chat.client().chat.completions.create(
        model="x", messages=[{"role": "user", "content": [{"type": "text", "text": "Tell me "}, {"type": "text", "text": "a story."}]}],
        max_completion_tokens=7, temperature=0, extra_body=NO_EOS)
    assert r.usage.completion_tokens == 7
    assert r.choices[0].finish_reason == "length"


def test_chat_stream_order(chat):
    client = chat.client()
    full = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=20, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    content = chunks[1:-2]
    assert content and all(c.choices[0].delta.content and c.choices[0].finish_reason is None for c in content)
    assert chunks[-2].choices[0].finish_reason == full.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full.choices[0].message.content
    # Every streamed piece is whole UTF-8 (the client decoded it without replacement characters
    # that the full text lacks).
    assert "\ufffd" not in "".join(c.choices[0].delta.content or "" for c in content) or "\ufffd" in full.choices[0].message.content


def test_chat_stop_and_seed(chat):
    client = chat.client()
    full = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=40, temperature=0,
                                          extra_body=NO_EOS).choices[0].message.content
    assert len(full) > 10
    # A stop string of three characters from the middle holding no replacement
    # character (the random model emits invalid UTF-8, which the server matches as
    # bytes and the client sees as U+FFFD): one that occurs once if there is one,
    # else an ASCII one (ASCII bytes decode the same on both sides), cut at its
    # first occurrence. Some replies of the random model are one character repeated.
    clean = [i for i in range(len(full) // 2, len(full) - 3) if "\ufffd" not in full[i:i + 3]]
    starts = [i for i in clean if full.count(full[i:i + 3]) == 1] or [i for i in clean if full[i:i + 3].isascii()]
    assert starts, full
    stop = full[starts[0]:starts[0] + 3]
    cut = full[:full.index(stop)]
    r = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=40, temperature=0, stop=[stop],
                                       extra_body=NO_EOS)
    assert r.choices[0].message.content == cut
    assert r.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=40, temperature=0, stop=stop,
                                              stream=True, extra_body=NO_EOS)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == cut
    a = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=24, temperature=0.9, seed=7)
    b = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=24, temperature=0.9, seed=7)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_chat_logprobs(chat):
    r = chat.client().chat.completions.create(model="x", messages=MESSAGES, max_tokens=5, temperature=0, logprobs=True,
                                              top_logprobs=2, extra_body=NO_EOS)
    content = r.choices[0].logprobs.content
    assert len(content) == 5
    for entry in content:
        assert len(entry.top_logprobs) == 2
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token or entry.bytes


def test_chat_concurrent_greedy_equal_alone(chat):
    """Two long greedy replies streamed at once equal each run alone, and they
    did run together: fewer decode steps than tokens sampled."""
    conversations = [[{"role": "user", "content": f"Story number {i}."}] for i in range(2)]

    def run(msgs):
        s = chat.client().chat.completions.create(model="x", messages=msgs, max_tokens=600, temperature=0, stream=True,
                                                  extra_body={"ignore_eos": True})
        return "".join(c.choices[0].delta.content or "" for c in s if c.choices)

    alone = [run(m) for m in conversations]
    before = chat.metrics()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        together = list(pool.map(run, conversations))
    after = chat.metrics()
    assert together == alone
    steps = after["kestrel_decode_steps_total"] - before["kestrel_decode_steps_total"]
    tokens = after["kestrel_tokens_generated_total"] - before["kestrel_tokens_generated_total"]
    assert tokens == 1200
    assert steps < tokens
