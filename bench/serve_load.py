#!/usr/bin/env python3
"""Load test of OpenAI-compatible servers: kestrel serve against llama.cpp's
llama-server on the same GGUF files, slots (-np) and threads.

For each model, server and number of concurrent clients (1, 2, 4, 8), every
client streams --requests completions one after another (fixed prompts that
differ from their second token on, so no server reuses a cached prefix; fixed
length: temperature 0 and ignore_eos). Reported per case, as the median over
--repeats runs: aggregate generation tokens/s (all tokens / wall time), time to
first token p50 / p99 and per-token latency (gaps between streamed chunks)
p50 / p99 in ms; then kestrel's ratios against llama-server and against its
own one-client figure. The servers of a model run side by side and take turns run
by run, so load from elsewhere on the machine hits them alike. --kestrel-baseline
adds a second kestrel binary (an A/B of a change, in the same run).

    flock /tmp/kestrel-timing.lock python3 bench/serve_load.py \\
        --kestrel build/release/bin/kestrel --llama-server ../llamacpp/build/bin/llama-server \\
        --model ~/.cache/kestrel/models/gemma-3-270m-q4_k_m.gguf -t 2
"""
import argparse
import asyncio
import os
import statistics
import sys
import time

import openai

from server_process import ServerProcess

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly pack "
         "boxes of jam and every river runs to the sea under a silver moon").split()


def prompt_for(i, n_words):
    # A number first: prompts share at most BOS and a token or two.
    body = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n_words))
    return f"{1000 + i * 7919 % 9000} {body}"


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def one_request(client, prompt, n_predict, ttft, gaps):
    t0 = time.perf_counter()
    last = None
    n_chunks = 0
    stream = await client.completions.create(model="m", prompt=prompt, max_tokens=n_predict, temperature=0.0, stream=True,
                                             stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    tokens = 0
    async for chunk in stream:
        now = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if not chunk.choices or not chunk.choices[0].text:
            continue
        if last is None:
            ttft.append((now - t0) * 1e3)
        else:
            gaps.append((now - last) * 1e3)
        last = now
        n_chunks += 1
    return tokens or n_chunks


async def run_case(url, n_clients, n_requests, n_predict, n_words, base):
    # One connection per request ("Connection: close"): a reused keep-alive
    # connection that the server has just closed (its per-connection request cap)
    # fails the next request, and the client's retry backoff would land in the
    # figures. No retries: a failure stops the run.
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600,
                                default_headers={"Connection": "close"})
    ttft, gaps = [], []

    async def client_loop(c):
        total = 0
        for r in range(n_requests):
            total += await one_request(client, prompt_for(base + c * n_requests + r, n_words), n_predict, ttft, gaps)
        return total

    t0 = time.perf_counter()
    totals = await asyncio.gather(*(client_loop(c) for c in range(n_clients)))
    wall = time.perf_counter() - t0
    await client.close()
    return {"tps": sum(totals) / wall, "ttft": ttft, "gaps": gaps}


def bench_servers(servers, args, log_dir):
    """servers: (name, cmd, port) triples, all started at once; every run of a case
    goes to each server in turn, so load from elsewhere on the machine hits them alike
    and the ratios between them hold even when the absolute figures drift."""
    procs = []
    results = {name: {} for name, _, _ in servers}
    try:
        for name, cmd, port in servers:
            procs.append((name, ServerProcess(cmd, port, os.path.join(log_dir, f"{name}.log"))))
        for _, server in procs:
            asyncio.run(run_case(server.url, 1, 1, 8, args.prompt_words, 900000))  # warm-up
        # Repeats outermost: a change in load from elsewhere during the run spreads over
        # every client count and server instead of biasing some of them.
        runs = {(name, n): [] for name, _ in procs for n in args.clients}
        base = 0
        for _ in range(args.repeats):
            for n in args.clients:
                for name, server in procs:
                    # The same prompts for every server in a repeat.
                    runs[(name, n)].append(asyncio.run(run_case(server.url, n, args.requests, args.n_predict,
                                                                args.prompt_words, base)))
                base += 1000
        for n in args.clients:
            for name, _ in procs:
                rs = runs[(name, n)]
                ttft = [x for r in rs for x in r["ttft"]]
                gaps = [x for r in rs for x in r["gaps"]]
                results[name][n] = {"tps": statistics.median(r["tps"] for r in rs), "ttft50": percentile(ttft, 50),
                                    "ttft99": percentile(ttft, 99), "tok50": percentile(gaps, 50),
                                    "tok99": percentile(gaps, 99)}
                r = results[name][n]
                print(f"  {name:<16} clients {n}: {r['tps']:8.1f} t/s  ttft p50 {r['ttft50']:8.1f} ms p99 "
                      f"{r['ttft99']:8.1f} ms  token p50 {r['tok50']:7.1f} ms p99 {r['tok99']:7.1f} ms", flush=True)
    finally:
        for _, server in procs:
            server.stop()
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kestrel", required=True, help="the kestrel binary")
    ap.add_argument("--llama-server", help="llama.cpp's llama-server binary (the baseline)")
    ap.add_argument("--kestrel-baseline", help="another kestrel binary (e.g. the previous commit's), run alongside")
    ap.add_argument("--model", action="append", required=True, help="GGUF model (repeatable)")
    ap.add_argument("--clients", default="1,2,4,8")
    ap.add_argument("-np", "--parallel", type=int, default=0, help="slots of both servers (default: the most clients)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-c", "--ctx-per-slot", type=int, default=512)
    ap.add_argument("--requests", type=int, default=2, help="requests per client per run")
    ap.add_argument("-n", "--n-predict", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--port", type=int, default=18431)
    ap.add_argument("--log-dir", default="/tmp")
    ap.add_argument("--servers", default="kestrel,llama-server",
                    help="which to run (kestrel includes --kestrel-baseline)")
    args = ap.parse_args()
    args.clients = [int(x) for x in args.clients.split(",")]
    n_slots = args.parallel or max(args.clients)
    print(f"# serve_load: {args.clients} clients, {args.requests} requests each, {args.n_predict} tokens, "
          f"~{args.prompt_words}-word prompts, -np {n_slots}, -t {args.threads}, {args.ctx_per_slot} tokens per slot, "
          f"median of {args.repeats}")
    summary = []
    for model in args.model:
        name = os.path.basename(model)
        print(f"model {name}", flush=True)
        k_cmd = [args.kestrel, "serve", "-m", model, "--port", str(args.port), "-np", str(n_slots), "-c",
                 str(args.ctx_per_slot), "-t", str(args.threads)]
        servers = []
        if "kestrel" in args.servers.split(","):
            servers.append(("kestrel", k_cmd, args.port))
            if args.kestrel_baseline:
                servers.append(("kestrel-baseline", [args.kestrel_baseline] + k_cmd[1:5] + [str(args.port + 2)] + k_cmd[6:],
                                args.port + 2))
        if args.llama_server and "llama-server" in args.servers.split(","):
            # llama-server splits -c among its slots: the same cells per slot.
            l_cmd = [args.llama_server, "-m", model, "--port", str(args.port + 1), "-np", str(n_slots), "-c",
                     str(args.ctx_per_slot * n_slots), "-t", str(args.threads), "-tb", str(args.threads),
                     "--no-webui", "-fa", "off"]
            servers.append(("llama-server", l_cmd, args.port + 1))
        res = bench_servers(servers, args, args.log_dir)
        summary.append((name, res))
    print("\n| model | clients | kestrel t/s | llama-server t/s | ratio | kestrel vs 1 client | kestrel TTFT p50 / p99 ms"
          " | llama-server TTFT p50 / p99 ms | kestrel token p50 / p99 ms | llama-server token p50 / p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, res in summary:
        k = res.get("kestrel")
        l = res.get("llama-server")
        if not k:
            continue
        for n in args.clients:
            kr = k[n]
            lr = l[n] if l else None
            ratio = f"{kr['tps'] / lr['tps']:.2f}x" if lr else "-"
            lt = f"{lr['tps']:.1f}" if lr else "-"
            lttft = f"{lr['ttft50']:.0f} / {lr['ttft99']:.0f}" if lr else "-"
            ltok = f"{lr['tok50']:.1f} / {lr['tok99']:.1f}" if lr else "-"
            print(f"| {name} | {n} | {kr['tps']:.1f} | {lt} | {ratio} | {kr['tps'] / k[args.clients[0]]['tps']:.2f}x | "
                  f"{kr['ttft50']:.0f} / {kr['ttft99']:.0f} | {lttft} | {kr['tok50']:.1f} / {kr['tok99']:.1f} | {ltok} |")
    if args.kestrel_baseline:
        print("\n| model | clients | kestrel t/s | baseline t/s | ratio | kestrel vs 1 client | baseline vs 1 client |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, res in summary:
            k, b = res.get("kestrel"), res.get("kestrel-baseline")
            if not k or not b:
                continue
            c0 = args.clients[0]
            for n in args.clients:
                print(f"| {name} | {n} | {k[n]['tps']:.1f} | {b[n]['tps']:.1f} | {k[n]['tps'] / b[n]['tps']:.2f}x | "
                      f"{k[n]['tps'] / k[c0]['tps']:.2f}x | {b[n]['tps'] / b[c0]['tps']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
