"""Runs petal's exported files in the independent runtimes and writes their outputs.

    verify_runtimes.py ONNX TORCHSCRIPT INPUT.bin N,C,H,W OUT_ONNX.bin OUT_TS.bin

INPUT.bin holds float32 little-endian values of shape N,C,H,W. The ONNX file is checked with
`onnx.checker.check_model(full_check=True)` (which also runs ONNX shape inference), then run with
onnxruntime's default CPU provider; the TorchScript file is loaded with `torch.jit.load` and run.
Each output is written as float32 little-endian. Metadata is printed as JSON on stdout.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch


def main():
    onnx_path, ts_path, inp, shape, out_onnx, out_ts = sys.argv[1:7]
    shape = tuple(int(d) for d in shape.split(","))
    x = np.fromfile(inp, dtype="<f4").reshape(shape)

    model = onnx.load(onnx_path)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x})
    y.astype("<f4").tofile(out_onnx)

    ts = torch.jit.load(ts_path)
    ts.eval()
    with torch.no_grad():
        yt = ts(torch.from_numpy(x))
    yt.numpy().astype("<f4").tofile(out_ts)

    print(json.dumps({
        "metadata": meta,
        "opset": [o.version for o in model.opset_import],
        "ir_version": model.ir_version,
        "input": sess.get_inputs()[0].name,
        "input_shape": [str(d) for d in sess.get_inputs()[0].shape],
        "output": sess.get_outputs()[0].name,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
