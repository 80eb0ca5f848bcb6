#!/usr/bin/env python3
"""onnxruntime reference for `crates/export/examples/bench_export.rs`: images/s of the ONNX files
petal exported in the same run (`target/bench/export-<key>.onnx` for lite0, lite2, densenet121 and the
lite012 ensemble, and the `.int8.onnx` files petal quantized beside them),
run by onnxruntime's default CPU execution provider with its default session options, at batch 1
and 32. Input: random normal values (a convolutional network's speed does not depend on the pixel
values; `--data` is accepted for the harness and unused). Protocol as on the Rust side: one untimed warm-up run,
then runs until --seconds have passed (at least --min-runs).

    export_onnxruntime.py [--json] [--data DIR] [--seconds S] [--min-runs N]

With --json the last stdout line is {"<key>_b1_img_s", "<key>_b32_img_s" for each key, the same under
"ort_*", the int8 files' figures under "int8_*", PyTorch eager under "eager_*", "onnxruntime", "torch",
"threads"}.

PyTorch eager (the `eager_*` keys, compared with petal's libtorch path): the same architectures built
by `efficientnet_lite_pytorch` and torchvision with a 102-class linear head (the ensemble: the three
members' pooled features concatenated, then one linear layer), random weights, eval mode,
torch.inference_mode, the same 224 px input, the same protocol. Skipped (keys absent) when torch is
not installed.
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


def eager_model(key):
    """The PyTorch eager network of `key`: backbone(s) and a 102-class linear head."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    import torchvision

    def lite(name):
        m = EfficientNet.from_name(name)
        width = m._fc.in_features
        m._fc = torch.nn.Identity()
        return m, width

    if key.startswith("lite") and len(key) == 5:
        m, width = lite(f"efficientnet-lite{key[4]}")
        return torch.nn.Sequential(m, torch.nn.Linear(width, 102))
    if key == "densenet121":
        m = torchvision.models.densenet121(weights=None)
        m.classifier = torch.nn.Linear(m.classifier.in_features, 102)
        return m
    if key == "lite012":
        members = [lite(f"efficientnet-lite{i}") for i in range(3)]

        class Ensemble(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.members = torch.nn.ModuleList([m for m, _ in members])
                self.fc = torch.nn.Linear(sum(w for _, w in members), 102)

            def forward(self, x):
                return self.fc(torch.cat([m(x) for m in self.members], 1))

        return Ensemble()
    raise SystemExit(f"unknown key {key}")


def eager(out, x32, a):
    try:
        import torch
    except ImportError:
        print("export_onnxruntime: torch is not installed; no PyTorch eager figures", file=sys.stderr)
        return
    torch.manual_seed(0)
    for key in ["lite0", "lite2", "densenet121", "lite012"]:
        m = eager_model(key).eval()
        with torch.inference_mode():
            for b in [1, 32]:
                x = torch.from_numpy(np.ascontiguousarray(x32[:b]))
                v = throughput(lambda: m(x), b, a.seconds, a.min_runs)
                print(f"export_onnxruntime: pytorch eager {key} batch {b}: {v:.1f} img/s", file=sys.stderr)
                out[f"eager_{key}_b{b}_img_s"] = v
    out["torch"] = torch.__version__


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--data", default="../shared/data/flowers102-mini")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--min-runs", type=int, default=2)
    a = ap.parse_args()
    x32 = np.random.default_rng(0).standard_normal((32, 3, 224, 224), dtype=np.float32)
    out = {}
    for key in ["lite0", "lite2", "densenet121", "lite012"]:
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
        # The int8 file (the same classifier quantized with petal's calibrated ranges), under the
        # key of petal's int8 path.
        int8 = os.path.join(ROOT, "target", "bench", f"export-{key}.int8.onnx")
        if os.path.exists(int8):
            sess = ort.InferenceSession(int8, providers=["CPUExecutionProvider"])
            for b in [1, 32]:
                x = np.ascontiguousarray(x32[:b])
                v = throughput(lambda: sess.run(None, {name: x}), b, a.seconds, a.min_runs)
                print(f"export_onnxruntime: {key} int8 batch {b}: {v:.1f} img/s", file=sys.stderr)
                out[f"int8_{key}_b{b}_img_s"] = v
    eager(out, x32, a)
    out["onnxruntime"] = ort.__version__
    out["threads"] = os.cpu_count()
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
