"""Bad clients do not take the server down: 50 concurrent connections with
broken requests, then a good request; /health says 503 while the model loads."""
import concurrent.futures
import os
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import SLOW, STORIES

pytestmark = pytest.mark.timeout(120)


def send_raw(url, payload, close_early=False):
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(payload)
        if close_early:
            return b""
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out
            out += b


def bad_request(url, i):
    kind = i % 6
    if kind == 0:
        return send_raw(url, b"\x00\x01garbage that is not HTTP\r\n\r\n")
    if kind == 1:
        body = b"{\"prompt\": \"Once\", \"max_tokens\": "
        return send_raw(url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    if kind == 2:  # a body shorter than its Content-Length, then the connection closes
        return send_raw(url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5000\r\n\r\n{\"messages\"",
                        close_early=True)
    if kind == 3:
        body = b"{\"messages\": [{\"role\": 5}], \"stream\": true}"
        return send_raw(url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    if kind == 4:
        return send_raw(url, b"GET /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Long: " + b"a" * 100000 + b"\r\n\r\n")
    body = b"\xff\xfe\xfd invalid utf-8 \xc3"
    return send_raw(url, b"POST /tokenize HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def test_fifty_bad_connections_then_a_good_request(stories):
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(lambda i: bad_request(stories.url, i), range(50)))
    # Every complete request got an answer (4xx), none a crash.
    for i, r in enumerate(replies):
        if i % 6 != 2:
            assert r.startswith(b"HTTP/1.1 4"), (i, r[:200])
    r = stories.client().completions.create(model="x", prompt="Once upon a time", max_tokens=8, temperature=0)
    assert r.choices[0].text.startswith(", there was")
    assert stories.get_status("/health") == 200


def test_health_is_503_while_loading(binary, tmp_path):
    # The model path is a FIFO: loading blocks until something writes to it.
    fifo = str(tmp_path / "model.gguf")
    os.mkfifo(fifo)
    proc = subprocess.Popen([binary, "serve", "-m", fifo, "--port", "0"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "listening on http://" in line, line
        url = line.split("listening on ")[1].split()[0]
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "/health", timeout=10)
        assert e.value.code == 503
        assert b"unavailable_error" in e.value.read()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(url + "/v1/completions", data=b"{}"), timeout=10)
        assert e.value.code == 503
        # Started without --metrics: /metrics is not served.
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "/metrics", timeout=10)
        assert e.value.code == 501
        # Not a model: the load fails and the server exits with the usage status.
        fd = os.open(fifo, os.O_WRONLY)
        try:
            os.write(fd, b"not a gguf file")
        except BrokenPipeError:
            pass  # the loader gave up on the file before reading it
        finally:
            os.close(fd)
        assert proc.wait(30 * SLOW) == 2
        assert "cannot load model" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_chat_template_fails_at_start(binary, chat_model):
    out = subprocess.run([binary, "serve", "-m", chat_model, "--port", "0", "--chat-template", "nosuchformat"],
                         capture_output=True, text=True, timeout=60 * SLOW)
    assert out.returncode == 2
    assert "unknown chat template 'nosuchformat'" in out.stderr


def test_port_in_use_fails_at_start(binary, stories):
    port = stories.url.rsplit(":", 1)[1]
    out = subprocess.run([binary, "serve", "-m", STORIES, "--port", port], capture_output=True, text=True, timeout=60 * SLOW)
    assert out.returncode == 1
    assert "cannot listen on 127.0.0.1:" + port in out.stderr
