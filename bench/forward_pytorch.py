#!/usr/bin/env python3
"""PyTorch reference for `crates/model/examples/bench_forward.rs`: forward images/s at batch 32
with random weights, eval mode, channels_last, torch.inference_mode (the fastest stock setup).

  forward_pytorch.py [--json] [--batches N] [--warmup N] [--batch B] [--threads T] [--arch NAME]... [--all]

Each architecture runs at its own input size (224; EfficientNet-Lite1 240, Lite2 260) unless
--size is given. --all measures every architecture added by issue 11 (VGG, ResNet, AlexNet,
EfficientNet-Lite1/2), the same list as the Rust example's --all.

With --json prints one line with the same keys as the Rust example:
{"impl":"pytorch","batch":32,"batches":3,"threads":2,"densenet121":<img/s>,"efficientnet_lite0":<img/s>}
"""
import argparse
import json
import sys
import time

import torch


ALL = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "resnet18", "resnet34", "resnet50",
       "resnet101", "resnet152", "alexnet", "efficientnet_lite1", "efficientnet_lite2"]
SIZES = {"efficientnet_lite1": 240, "efficientnet_lite2": 260}


def build(arch):
    if arch.startswith("efficientnet_lite"):
        from efficientnet_lite_pytorch import EfficientNet
        return EfficientNet.from_name(arch.replace("_", "-"))
    if arch.startswith(("densenet", "vgg", "resnet", "alexnet")):
        import torchvision
        return getattr(torchvision.models, arch)(weights=None)
    raise SystemExit(f"unknown arch {arch}")


def bench(arch, a):
    torch.manual_seed(0)
    m = build(arch).eval().to(memory_format=torch.channels_last)
    size = a.size or SIZES.get(arch, 224)
    x = torch.randn(a.batch, 3, size, size).contiguous(memory_format=torch.channels_last)
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
    p.add_argument("--size", type=int)
    p.add_argument("--arch", action="append")
    p.add_argument("--all", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    out = {"impl": "pytorch", "batch": a.batch, "batches": a.batches, "threads": torch.get_num_threads()}
    for arch in (ALL if a.all else a.arch or ["densenet121", "efficientnet_lite0"]):
        r = bench(arch, a)
        out[arch] = round(r, 3)
        if not a.json:
            print(f"{arch}: {r:.2f} img/s (batch {a.batch}, {a.batches} batches)")
    if a.json:
        print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    sys.exit(main())
