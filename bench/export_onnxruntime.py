#!/usr/bin/env python3
"""onnxruntime reference for `crates/export/examples/bench_export.rs`: images/s of the ONNX files
petal exported in the same run (`target/bench/export-<key>.onnx` for lite0, lite2, densenet121 and the
lite012 ensemble, and the `.int8.onnx` files petal quantized beside them),
run by onnxruntime's default CPU execution provider at batch 1 and 32: with its default session
options (idle intra-op workers spin) under the plain and `ort_spin_*` keys, and with spinning off, as
petal runs its sessions, under `ort_*` and `int8_*`. Input: random normal values (checked in session
14: the real images petal's side uses run at the same speed; `--data` is accepted for the harness and
unused). Protocol as on the Rust side: untimed warm-up runs for a second, then runs until --seconds
have passed (at least --min-runs); the best of --rounds such figures, the sessions of one network
alternating.

    export_onnxruntime.py [--json] [--data DIR] [--seconds S] [--min-runs N] [--rounds R]

With --json the last stdout line is {"<key>_b1_img_s", "<key>_b32_img_s" for each key, the same under
"ort_spin_*" and (no spinning) "ort_*", the int8 files' figures under "int8_*", PyTorch eager under
"eager_*", "onnxruntime", "torch", "threads"}.

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


WARM_UP_S = 1.0  # untimed warm-up before each figure, as on the Rust side


def throughput(run, batch, seconds, min_runs):
    warm = time.perf_counter()
    run()
    while time.perf_counter() - warm < min(WARM_UP_S, seconds):
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


def no_spinning():
    """Session options as petal sets them: idle intra-op workers sleep instead of spinning."""
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--data", default="../shared/data/flowers102-mini")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--min-runs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="best of this many figures, sessions alternating")
    a = ap.parse_args()
    x32 = np.random.default_rng(0).standard_normal((32, 3, 224, 224), dtype=np.float32)
    out = {}
    for key in ["lite0", "lite2", "densenet121", "lite012"]:
        path = os.path.join(ROOT, "target", "bench", f"export-{key}.onnx")
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run the Rust side (bench_export) first")
        # onnxruntime's defaults (idle workers spin) under the plain key and under the key of
        # petal's path with spinning on; petal's session options (idle workers sleep) under the
        # key of petal's default path; the int8 file (the same classifier quantized with petal's
        # calibrated ranges) with petal's options under the key of petal's int8 path.
        sessions = [
            (["", "ort_spin_"], ort.InferenceSession(path, providers=["CPUExecutionProvider"])),
            (["ort_"], ort.InferenceSession(path, no_spinning(), providers=["CPUExecutionProvider"])),
        ]
        int8 = os.path.join(ROOT, "target", "bench", f"export-{key}.int8.onnx")
        if os.path.exists(int8):
            sessions.append((["int8_"], ort.InferenceSession(int8, no_spinning(), providers=["CPUExecutionProvider"])))
        name = sessions[0][1].get_inputs()[0].name
        for b in [1, 32]:
            x = np.ascontiguousarray(x32[:b])
            for r in range(a.rounds):
                for prefixes, sess in sessions:
                    v = throughput(lambda: sess.run(None, {name: x}), b, a.seconds, a.min_runs)
                    print(f"export_onnxruntime: round {r + 1}, {prefixes[-1]}{key} batch {b}: {v:.1f} img/s", file=sys.stderr)
                    for p in prefixes:
                        k = f"{p}{key}_b{b}_img_s"
                        out[k] = max(out.get(k, 0.0), v)
    eager(out, x32, a)
    out["onnxruntime"] = ort.__version__
    out["threads"] = os.cpu_count()
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
