#!/usr/bin/env python3
"""The PyTorch side of the `convert` benchmark (crates/model/examples/bench_convert.rs drives it).

  convert_pytorch.py write DIR   writes DIR/vgg16_zip.pth and DIR/vgg16_legacy.pth: a torchvision
                                 VGG-16 state dict with random weights (~553 MB each), saved in
                                 the zip and the legacy serialization
  convert_pytorch.py load FILE   times torch.load(FILE, map_location="cpu") in this fresh process
                                 and prints {"load_s": ..., "peak_rss_bytes": ..., "base_rss_bytes": ...}
                                 (VmHWM after loading, and VmRSS before, with torch imported)
"""
import json
import os
import sys
import time


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def write(d):
    import torch
    import torchvision
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(0)
    sd = torchvision.models.vgg16(weights=None).state_dict()
    torch.save(sd, os.path.join(d, "vgg16_zip.pth.tmp"))
    os.replace(os.path.join(d, "vgg16_zip.pth.tmp"), os.path.join(d, "vgg16_zip.pth"))
    torch.save(sd, os.path.join(d, "vgg16_legacy.pth.tmp"), _use_new_zipfile_serialization=False)
    os.replace(os.path.join(d, "vgg16_legacy.pth.tmp"), os.path.join(d, "vgg16_legacy.pth"))


def load(path):
    import torch
    torch.set_num_threads(1)
    base = status("VmRSS")
    t = time.perf_counter()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    s = time.perf_counter() - t
    assert len(sd) == 32, len(sd)
    print(json.dumps({"load_s": s, "peak_rss_bytes": status("VmHWM"), "base_rss_bytes": base}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "load":
        load(sys.argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
