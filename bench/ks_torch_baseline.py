#!/usr/bin/env python3
"""The PyTorch baseline of a Kronecker-sparse factor on the GPU: permute + bmm + permute.

For each pattern (a, b, c, d) of bench_ks_cuda's set (the same enumeration) and each batch,
in fp32 and bf16 (every tensor in that dtype, as PyTorch code would run it; TF32 off),
times the authors' baseline on x of shape (batch, a*c*d) (batch first):

    x.reshape(B, a, c, d).permute(1, 3, 0, 2).reshape(a*d, B, c)   # contiguous copy
    bmm with the weights (a*d, c, b)
    .reshape(a, d, B, b).permute(2, 0, 3, 1).reshape(B, a*b*d)     # contiguous copy

and the dense matmul with the materialized (a*b*d) x (a*c*d) matrix, with CUDA events
(median of --reps runs after a warm-up). Prints one CSV line per case.

    python3 bench/ks_torch_baseline.py [--reps 15] [--batches 1,16,128,4096,25088] > ks_torch.csv
"""
import argparse
import statistics
import sys

import torch

SIZES = [48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
DS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]
WIDTHS = {768, 1024, 1536, 2048, 3072, 4096}


def patterns():
    out = []
    for a in [1, 4, 16, 32, 64]:
        for b in SIZES:
            for c in SIZES:
                if not (b == c or b == 4 * c or c == 4 * b):
                    continue
                for d in DS:
                    if a * b * d in WIDTHS and a * c * d in WIDTHS:
                        out.append((a, b, c, d))
    return out


def time_us(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--batches", default="1,16,128,4096,25088")
    ap.add_argument("--dtypes", default="fp32,bf16")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    batches = [int(v) for v in args.batches.split(",")]
    dtypes = [(n, torch.float32 if n == "fp32" else torch.bfloat16) for n in args.dtypes.split(",")]
    print("a,b,c,d,batch,dtype,t_torch_bmm_us,t_torch_dense_us", flush=True)
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}", file=sys.stderr)
    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    for name, dt in dtypes:
        for batch in batches:
            for a, b, c, d in patterns():
                w = torch.rand(a * d, c, b, device=dev, dtype=dt, generator=gen) * 2 - 1
                x = torch.rand(batch, a * c * d, device=dev, dtype=dt, generator=gen) * 2 - 1
                dense = torch.zeros(a * b * d, a * c * d, device=dev, dtype=dt)
                dv = dense.view(a, b, d, a, c, d)
                wv = w.view(a, d, c, b)
                for i in range(a):
                    for j in range(d):
                        dv[i, :, j, i, :, j] = wv[i, j].t()

                def bmm():
                    xp = x.reshape(batch, a, c, d).permute(1, 3, 0, 2).reshape(a * d, batch, c)
                    y = torch.bmm(xp, w)
                    return y.reshape(a, d, batch, b).permute(2, 0, 3, 1).reshape(batch, a * b * d)

                def dense_mm():
                    return x @ dense.t()

                # The two must agree: a wrong permute would time the wrong thing.
                ref = dense_mm().float()
                got = bmm().float()
                err = ((got - ref).norm() / ref.norm()).item()
                if err > (1e-4 if dt == torch.float32 else 3e-2):
                    print(f"mismatch {a},{b},{c},{d} batch {batch} {name}: {err:.2e}", file=sys.stderr)
                    sys.exit(1)
                t_bmm = time_us(bmm, args.reps)
                t_dense = time_us(dense_mm, args.reps)
                print(f"{a},{b},{c},{d},{batch},{name},{t_bmm:.2f},{t_dense:.2f}", flush=True)
                del w, x, dense, dv, wv


if __name__ == "__main__":
    main()
