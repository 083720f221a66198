"""Fixtures of the `kestrel serve` tests: servers on free loopback ports.

    python3 -m pytest tests/server --kestrel build/release/bin/kestrel

Three servers are started once per session: stories260K (completions, 4 slots),
a synthetic Q8_0 model whose GGUF carries a chat template (chat, and the
batching tests: 4 slots), and the
same synthetic model behind an API key with one slot and no queue (401 / 503 /
disconnect tests). Each listens on a port the OS picks (--port 0) and is
polled on /health until it answers 200, with a deadline; at the end each is
stopped with SIGINT and must exit 0 (under ASan: without leaks or errors).
"""
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.environ.get("KESTREL_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
STORIES = os.path.join(SHARED, "models", "stories260K", "stories260K.gguf")
API_KEY = "test-key-123"
# Sanitizer builds run several times slower: the deadlines scale.
SLOW = float(os.environ.get("KESTREL_TEST_SLOWDOWN", "1"))


def pytest_addoption(parser):
    parser.addoption("--kestrel", default=os.environ.get("KESTREL_BIN", os.path.join(ROOT, "build", "release", "bin", "kestrel")),
                     help="the kestrel binary to test")


class Server:
    def __init__(self, binary, model, args, name):
        self.name = name
        self.alias = name
        cmd = [binary, "serve", "-m", model, "--port", "0", "--alias", name, *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
        self.lines = []
        self.listening = threading.Event()
        self.url = None
        self.reader = threading.Thread(target=self._read_stderr, daemon=True)
        self.reader.start()
        if not self.listening.wait(30 * SLOW):
            self.proc.kill()
            raise RuntimeError(f"{name}: no 'listening on' line:\n" + "".join(self.lines))
        deadline = time.monotonic() + 60 * SLOW
        while True:
            status = self.get_status("/health")
            if status == 200:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"{name}: /health answered {status}:\n" + "".join(self.lines))
            time.sleep(0.02)

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            if self.url is None and "listening on http://" in line:
                self.url = line.split("listening on ")[1].split()[0]
                self.listening.set()

    def get_status(self, path, headers=None):
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=headers or {}), timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def client(self, api_key="none", **kw):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=60 * SLOW, **kw)

    def metrics(self, api_key=None):
        headers = {"Authorization": "Bearer " + api_key} if api_key else {}
        with urllib.request.urlopen(urllib.request.Request(self.url + "/metrics", headers=headers), timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.split()
                out[k] = float(v)
        return out

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(30 * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = "killed after 30 s"
        self.reader.join(5)
        log = "".join(self.lines)
        assert code == 0, f"{self.name} exited {code}:\n{log}"
        assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log


@pytest.fixture(scope="session")
def binary(request):
    path = request.config.getoption("--kestrel")
    if not os.access(path, os.X_OK):
        pytest.skip(f"SKIP: {path} is not built")
    out = subprocess.run([path, "serve", "--help"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"SKIP: {path} has no serve command (built without cpp-httplib)")
    return path


@pytest.fixture(scope="session")
def chat_model(tmp_path_factory):
    if not os.path.exists(STORIES):
        pytest.skip(f"SKIP: {STORIES} not found")
    import synth_chat_model
    path = str(tmp_path_factory.mktemp("models") / "synth-chat-q8_0.gguf")
    synth_chat_model.write(STORIES, path)
    return path


@pytest.fixture(scope="session")
def stories(binary):
    if not os.path.exists(STORIES):
        pytest.skip(f"SKIP: {STORIES} not found")
    s = Server(binary, STORIES, ["-np", "4", "-c", "256", "-t", "2", "--metrics"], "stories260K")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def chat(binary, chat_model):
    s = Server(binary, chat_model, ["-np", "4", "-c", "1024", "-t", "2", "--metrics"], "synth-chat")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def guarded(binary, chat_model):
    s = Server(binary, chat_model, ["-np", "1", "-c", "8192", "-t", "1", "--metrics", "--max-queue", "0",
                                    "--api-key", API_KEY], "guarded")
    yield s
    s.stop()
