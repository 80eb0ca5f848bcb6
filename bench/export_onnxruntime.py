#!/usr/bin/env python3
"""onnxruntime reference for `crates/export/examples/bench_export.rs`: images/s of the ONNX files
petal exported in the same run (`target/bench/export-lite0.onnx`, `target/bench/export-densenet121.onnx`),
run by onnxruntime's default CPU execution provider with its default session options, at batch 1
and 32. Input: random normal values (a convolutional network's speed does not depend on the pixel
values; `--data` is accepted for the harness and unused). Protocol as on the Rust side: one untimed warm-up run,
then runs until --seconds have passed (at least --min-runs).

    export_onnxruntime.py [--json] [--data DIR] [--seconds S] [--min-runs N]

With --json the last stdout line is {"lite0_b1_img_s", "lite0_b32_img_s", "densenet121_b1_img_s",
"densenet121_b32_img_s", the same four under "ort_*", "onnxruntime", "threads"}.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def throughput(run, batch, seconds, min_runs):
    run()
    t = time.perf_counter()
    n = 0
    while n < min_runs or time.perf_counter() - t < seconds:
        run()
        n += 1
    return n * batch / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--data", default="../shared/data/flowers102-mini")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--min-runs", type=int, default=2)
    a = ap.parse_args()
    x32 = np.random.default_rng(0).standard_normal((32, 3, 224, 224), dtype=np.float32)
    out = {}
    for key in ["lite0", "densenet121"]:
        path = os.path.join(ROOT, "target", "bench", f"export-{key}.onnx")
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run the Rust side (bench_export) first")
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for b in [1, 32]:
            x = np.ascontiguousarray(x32[:b])
            v = throughput(lambda: sess.run(None, {name: x}), b, a.seconds, a.min_runs)
            print(f"export_onnxruntime: {key} batch {b}: {v:.1f} img/s", file=sys.stderr)
            out[f"{key}_b{b}_img_s"] = v
            # The same figure under petal-onnxruntime's key, so the table's ratio column compares
            # petal's onnxruntime path with Python onnxruntime on the same file directly.
            out[f"ort_{key}_b{b}_img_s"] = v
    out["onnxruntime"] = ort.__version__
    out["threads"] = os.cpu_count()
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
