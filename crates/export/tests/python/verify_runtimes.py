"""Runs petal's exported files in the independent runtimes and writes their outputs.

    verify_runtimes.py JOBS.json

JOBS.json is a list of {"onnx", "torchscript", "input", "shape", "out_onnx", "out_torchscript"}:
"input" holds float32 little-endian values of shape "shape" (N,C,H,W). Each ONNX file is checked
with `onnx.checker.check_model(full_check=True)` (which also runs ONNX shape inference), then run
with onnxruntime's default CPU provider; each TorchScript file is loaded with `torch.jit.load` and
run. Outputs are written as float32 little-endian. One Python process serves all jobs (importing
torch is the slow part); a JSON list of what each file records is printed on stdout.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch


def run(job):
    x = np.fromfile(job["input"], dtype="<f4").reshape(job["shape"])
    model = onnx.load(job["onnx"])
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    sess = ort.InferenceSession(job["onnx"], providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x})
    y.astype("<f4").tofile(job["out_onnx"])
    ts = torch.jit.load(job["torchscript"])
    ts.eval()
    with torch.no_grad():
        yt = ts(torch.from_numpy(x))
    yt.numpy().astype("<f4").tofile(job["out_torchscript"])
    return {
        "metadata": meta,
        "opset": [o.version for o in model.opset_import],
        "ir_version": model.ir_version,
        "input": sess.get_inputs()[0].name,
        "input_shape": [str(d) for d in sess.get_inputs()[0].shape],
        "output": sess.get_outputs()[0].name,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
    }


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    print(json.dumps([run(job) for job in jobs]))


if __name__ == "__main__":
    main()
