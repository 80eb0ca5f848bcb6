"""onnxruntime's own static int8 quantizer against petal's, on the same exported float file.

Is DenseNet-121's small int8 gain petal's quantizer or the runtime? This quantizes
`target/bench/export-<net>.onnx` (written by `cargo run --release -p export --example bench_export`)
with onnxruntime's `quantize_static` (QDQ, per-channel int8 weights, uint8 activations, after
`quant_pre_process`, calibrated on 8 random images: the speed does not depend on the ranges), and
times the float file, petal's `export-<net>.int8.onnx` and onnxruntime's file in one process with
onnxruntime's default session options, at batch 1 and 32 (one second of warm-up, then four timed).

Needs `onnx` besides onnxruntime, so it runs in its own venv, not bench/.venv:
  python3 -m venv /tmp/qvenv && /tmp/qvenv/bin/pip install onnxruntime==1.32.0 onnx numpy
  /tmp/qvenv/bin/python bench/int8_ort_quantizer.py densenet121   # or lite0, lite2, lite012
"""
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    net = sys.argv[1] if len(sys.argv) > 1 else "densenet121"
    base = os.path.join(ROOT, "target/bench", f"export-{net}")
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(8)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x}

    with tempfile.TemporaryDirectory() as tmp:
        pre, ortq = os.path.join(tmp, "pre.onnx"), os.path.join(tmp, "ortq.onnx")
        quant_pre_process(base + ".onnx", pre, skip_symbolic_shape=True)
        quantize_static(pre, ortq, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)

        def rate(path, b, secs=4.0):
            s = ort.InferenceSession(path, ort.SessionOptions(), providers=["CPUExecutionProvider"])
            name = s.get_inputs()[0].name
            x = np.concatenate([calib[i % len(calib)] for i in range(b)])
            t = time.time()
            while time.time() - t < 1.0:
                s.run(None, {name: x})
            n, t = 0, time.time()
            while time.time() - t < secs:
                s.run(None, {name: x})
                n += b
            return n / (time.time() - t)

        for b in (1, 32):
            r = {k: rate(p, b) for k, p in [("fp32", base + ".onnx"), ("petal_int8", base + ".int8.onnx"), ("ort_int8", ortq)]}
            print(f"{net} batch {b}: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in r.items())
                  + f"; int8 / fp32: petal {r['petal_int8'] / r['fp32']:.2f}, onnxruntime's quantizer {r['ort_int8'] / r['fp32']:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
