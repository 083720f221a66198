"""A server process of the serving benchmarks (serve_load.py, serve_spec.py):
started with its output to a log file, ready once GET /health answers 200
(within 300 s), stopped with SIGTERM (SIGKILL after 30 s)."""
import subprocess
import time
import urllib.request


class ServerProcess:
    def __init__(self, cmd, port, log_path):
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"{' '.join(cmd)} exited {self.proc.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{cmd[0]}: /health not 200 within 300 s; see {log_path}")
            time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
