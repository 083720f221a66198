"""kestrel serve --spec draft: greedy completions equal plain serving's, the
speculative counters in /metrics, and the summary on stderr at shutdown."""
import concurrent.futures

import pytest

from conftest import STORIES, Server

PROMPTS = ["Once upon a time", "The cat sat", "Tom had a red ball", "One day, a big dog"]

pytestmark = pytest.mark.timeout(180)


def complete(server, prompt, **kw):
    r = server.client().completions.create(model=server.alias, prompt=prompt, max_tokens=32, temperature=0, **kw)
    return r.choices[0].text, r.choices[0].finish_reason


@pytest.mark.parametrize("draft", ["self", "stories260K"])
def test_draft_serving_matches_plain(binary, chat_model, chat, draft):
    # The synthetic Q8_0 model drafts for itself (every draft accepted), or
    # stories260K (the same vocabulary, other weights) drafts for it (some
    # drafts rejected): the rounds verify several rows per slot in one batch
    # beside the other slots.
    # The second server also reads both models into memory (--no-mmap).
    draft_path = chat_model if draft == "self" else STORIES
    spec = Server(binary, chat_model, ["-np", "4", "-c", "1024", "-t", "2", "--metrics", "-md", draft_path, "--spec", "draft",
                                       "--draft-max", "6"] + ([] if draft == "self" else ["--no-mmap"]), "synth-chat")
    try:
        want = [complete(chat, p) for p in PROMPTS]
        with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
            got = list(pool.map(lambda p: complete(spec, p), PROMPTS))
        assert got == want
        # Sampling with a temperature decodes plainly beside them (and still answers).
        r = spec.client().completions.create(model="synth-chat", prompt=PROMPTS[1], max_tokens=8, temperature=0.8, seed=3)
        assert r.usage.completion_tokens == 8
        m = spec.metrics()
        assert m["kestrel_spec_requests_total"] == len(PROMPTS)
        assert m["kestrel_spec_rounds_total"] > 0
        assert m["kestrel_spec_draft_tokens_total"] >= m["kestrel_spec_rounds_total"]
        if draft == "self":
            assert m["kestrel_spec_accepted_tokens_total"] == m["kestrel_spec_draft_tokens_total"]
        else:
            assert m["kestrel_spec_accepted_tokens_total"] < m["kestrel_spec_draft_tokens_total"]
        by_g = {k: v for k, v in m.items() if k.startswith("kestrel_spec_rounds_g")}
        assert by_g and sum(by_g.values()) == m["kestrel_spec_rounds_total"]
        assert "kestrel_spec_rounds_total" not in chat.metrics()  # plain servers do not export them
    finally:
        spec.stop()
    log = "".join(spec.lines)
    assert "rounds drafted" in log and "rounds by draft length: g=" in log, log


def test_draft_flags_are_checked(binary, chat_model):
    import subprocess
    out = subprocess.run([binary, "serve", "-m", chat_model, "--port", "0", "--spec", "draft"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert "--spec draft needs -md" in out.stderr
