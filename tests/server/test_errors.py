"""Every error of the server with its HTTP status and OpenAI error type."""
import json
import time
import urllib.error
import urllib.request

import openai
import pytest

from conftest import API_KEY

pytestmark = pytest.mark.timeout(120)


def raw_post(server, path, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def assert_error(status, body, want_status, want_type):
    assert status == want_status, body
    err = body["error"]
    assert err["type"] == want_type
    assert err["code"] == want_status
    assert isinstance(err["message"], str) and err["message"]


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b"\xff\xfe"])
def test_malformed_json_is_400(stories, body):
    assert_error(*raw_post(stories, "/v1/completions", body), 400, "invalid_request_error")
    assert_error(*raw_post(stories, "/v1/chat/completions", body), 400, "invalid_request_error")


@pytest.mark.parametrize("field,value", [
    ("temperature", "hot"), ("temperature", 2.5), ("temperature", -1), ("top_p", 1.5), ("top_k", -3), ("top_k", 1.5),
    ("min_p", 2), ("max_tokens", -5), ("max_tokens", "ten"), ("n", 2), ("n", 0), ("stop", 3), ("stop", ["a", 1]),
    ("stream", "yes"), ("seed", "x"), ("logprobs", 50), ("prompt", {"a": 1}), ("prompt", [1, -4]), ("prompt", [1, 100000]),
    ("presence_penalty", 1.0), ("stream_options", 5),
])
def test_bad_completion_fields_are_400(stories, field, value):
    body = {"model": "x", "prompt": "Once", "max_tokens": 2, field: value}
    status, out = raw_post(stories, "/v1/completions", body)
    assert_error(status, out, 400, "invalid_request_error")


@pytest.mark.parametrize("body", [
    {"messages": []}, {"messages": "hi"}, {"messages": [{"content": "no role"}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
    {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 30, "logprobs": True},
    {"messages": [{"role": "user", "content": "x"}], "logprobs": 3}, {},
])
def test_bad_chat_bodies_are_400(chat, body):
    assert_error(*raw_post(chat, "/v1/chat/completions", body), 400, "invalid_request_error")


def test_errors_through_the_openai_client(stories):
    client = stories.client()
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="x", prompt="Once", max_tokens=2, n=2)
    assert e.value.status_code == 400
    assert e.value.response.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="x", prompt="Once", max_tokens=2, temperature=7)


def test_prompt_longer_than_the_slot_is_400(stories):
    # stories runs -c 256: 300 words are more tokens than a slot holds.
    status, out = raw_post(stories, "/v1/completions", {"prompt": "the cat sat " * 100, "max_tokens": 1})
    assert_error(status, out, 400, "invalid_request_error")
    assert "context" in out["error"]["message"]
    with pytest.raises(openai.BadRequestError):
        stories.client().completions.create(model="x", prompt=[1] + [261] * 300, max_tokens=1)


def test_unknown_route_is_404(stories):
    assert_error(*raw_post(stories, "/v1/nothing", {}), 404, "not_found_error")


def test_api_key(guarded):
    assert guarded.get_status("/health") == 200  # no key needed
    with pytest.raises(openai.AuthenticationError) as e:
        guarded.client(api_key="wrong").completions.create(model="x", prompt="hi", max_tokens=2)
    assert e.value.status_code == 401
    assert e.value.response.json()["error"]["type"] == "authentication_error"
    status, out = raw_post(guarded, "/v1/completions", {"prompt": "hi", "max_tokens": 2})
    assert_error(status, out, 401, "authentication_error")
    assert guarded.get_status("/v1/models") == 401
    r = guarded.client(api_key=API_KEY).completions.create(model="x", prompt="hi", max_tokens=2, temperature=0)
    assert r.usage.completion_tokens == 2


def test_queue_full_is_503_and_disconnect_frees_the_slot(guarded):
    """guarded has one slot and no queue. A long stream holds the slot: a second
    request is refused with 503. Closing the stream mid-way cancels it; the slot
    frees and the next request succeeds."""
    client = guarded.client(api_key=API_KEY)
    before = guarded.metrics(API_KEY)
    stream = client.completions.create(model="x", prompt="hi", max_tokens=8000, temperature=0, stream=True,
                                       extra_body={"ignore_eos": True})
    it = iter(stream)
    for _ in range(3):
        next(it)
    with pytest.raises(openai.InternalServerError) as e:
        client.completions.create(model="x", prompt="hello", max_tokens=2)
    assert e.value.status_code == 503
    assert e.value.response.json()["error"]["type"] == "unavailable_error"
    stream.close()
    deadline = time.monotonic() + 30
    while True:
        m = guarded.metrics(API_KEY)
        if m["kestrel_requests_cancelled_total"] > before["kestrel_requests_cancelled_total"] and m["kestrel_slots_busy"] == 0:
            break
        assert time.monotonic() < deadline, m
        time.sleep(0.02)
    assert m["kestrel_tokens_generated_total"] - before["kestrel_tokens_generated_total"] < 8000
    r = client.completions.create(model="x", prompt="hello", max_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3


def test_non_streaming_disconnect_frees_the_slot(guarded):
    """A client that gives up on a long non-streaming request (its timeout closes the
    connection) cancels the request: the one slot frees long before the 8000 tokens
    are done, and the next request succeeds."""
    before = guarded.metrics(API_KEY)
    impatient = openai.OpenAI(base_url=guarded.url + "/v1", api_key=API_KEY, max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        impatient.completions.create(model="x", prompt="hi", max_tokens=8000, temperature=0,
                                     extra_body={"ignore_eos": True})
    deadline = time.monotonic() + 30
    while True:
        m = guarded.metrics(API_KEY)
        if m["kestrel_requests_cancelled_total"] > before["kestrel_requests_cancelled_total"] and m["kestrel_slots_busy"] == 0:
            break
        assert time.monotonic() < deadline, m
        time.sleep(0.02)
    assert m["kestrel_response_disconnects_total"] == before["kestrel_response_disconnects_total"] + 1
    assert m["kestrel_tokens_generated_total"] - before["kestrel_tokens_generated_total"] < 8000
    r = guarded.client(api_key=API_KEY).completions.create(model="x", prompt="hello", max_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3
