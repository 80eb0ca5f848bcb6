"""torch.save/torch.load reference for the checkpoint I/O benchmark.

Same tensor set as crates/checkpoint/examples/bench_io.rs: torchvision densenet121's state dict
(F32 weights, I64 num_batches_tracked). Prints one JSON line with the medians of save_s and
load_s, like the Rust example.

    /work/venv-torch/bin/python bench/checkpoint_io.py [--runs N] [--dir DIR]
"""
import argparse
import json
import os
import statistics
import tempfile
import time

import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--json", action="store_true", help="accepted for symmetry; output is always JSON")
    a = ap.parse_args()
    torch.manual_seed(0)
    sd = torchvision.models.densenet121(weights=None).state_dict()
    for v in sd.values():
        if v.dtype == torch.float32:
            v.uniform_(-0.5, 0.5)
    path = os.path.join(a.dir, f"torch-bench-io-{os.getpid()}.pth")
    torch.save(sd, path)  # warm-up
    torch.load(path)
    save_t, load_t = [], []
    for _ in range(a.runs):
        t = time.perf_counter()
        torch.save(sd, path)
        save_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        back = torch.load(path)
        load_t.append(time.perf_counter() - t)
        assert len(back) == len(sd)
    file_bytes = os.path.getsize(path)
    os.remove(path)
    print(json.dumps({
        "bench": "checkpoint_io", "impl": f"torch.save/torch.load {torch.__version__}",
        "tensors": len(sd), "numel": sum(v.numel() for v in sd.values()),
        "tensor_bytes": sum(v.numel() * v.element_size() for v in sd.values()), "file_bytes": file_bytes,
        "runs": a.runs, "save_s": statistics.median(save_t), "load_s": statistics.median(load_t),
    }))


if __name__ == "__main__":
    main()
