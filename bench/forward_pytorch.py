#!/usr/bin/env python3
"""PyTorch reference for `crates/model/examples/bench_forward.rs`: forward images/s at batch 32
with random weights, eval mode, channels_last, torch.inference_mode (the fastest stock setup).

  forward_pytorch.py [--json] [--batches N] [--warmup N] [--batch B] [--threads T] [--arch NAME]...

With --json prints one line with the same keys as the Rust example:
{"impl":"pytorch","batch":32,"batches":3,"threads":2,"densenet121":<img/s>,"efficientnet_lite0":<img/s>}
"""
import argparse
import json
import sys
import time

import torch


def build(arch):
    if arch == "densenet121":
        import torchvision
        return torchvision.models.densenet121(weights=None)
    if arch == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet
        return EfficientNet.from_name("efficientnet-lite0")
    raise SystemExit(f"unknown arch {arch}")


def bench(arch, a):
    torch.manual_seed(0)
    m = build(arch).eval().to(memory_format=torch.channels_last)
    x = torch.randn(a.batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(a.warmup):
            m(x)
        t = time.perf_counter()
        for _ in range(a.batches):
            m(x)
        return a.batches * a.batch / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json", action="store_true")
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int)
    p.add_argument("--arch", action="append")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    out = {"impl": "pytorch", "batch": a.batch, "batches": a.batches, "threads": torch.get_num_threads()}
    for arch in a.arch or ["densenet121", "efficientnet_lite0"]:
        r = bench(arch, a)
        out[arch] = round(r, 3)
        if not a.json:
            print(f"{arch}: {r:.2f} img/s (batch {a.batch}, {a.batches} batches)")
    if a.json:
        print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    sys.exit(main())
