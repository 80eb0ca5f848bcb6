#!/usr/bin/env python3
"""Reference server for the `serve` suite of `cargo xtask bench --vs-pytorch`.

The same network and weights as `petal serve` in the same run: the Rust side's checkpoint
`target/bench/predict-lite0.safetensors` (EfficientNet-Lite0 + the seed's head) is converted by
`predict_pytorch.export` into a seed-style `.pth` and loaded with the seed's `load_checkpoint`.
Served as people usually write it: FastAPI + uvicorn (one worker), one image per request, PIL +
torchvision transforms (Resize 256, CenterCrop 224, ToTensor, Normalize), `torch.inference_mode`,
top-k of the softmax, JSON in the same shape as petal's answer.

  serve_pytorch.py --port N [--petal-checkpoint F] [--pth F]

`crates/serve/examples/bench_serve.rs` starts it, waits for GET /healthz, drives the same load
generator against it as against `petal serve`, reads its peak RSS and stops it with SIGTERM.
"""
import argparse
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from predict_pytorch import ROOT, export, load_checkpoint  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--petal-checkpoint", default=os.path.join(ROOT, "target/bench/predict-lite0.safetensors"))
    p.add_argument("--pth", default=os.path.join(ROOT, "target/bench/predict-lite0.pth"))
    a = p.parse_args()
    export(a.petal_checkpoint, a.pth)

    import torch
    import uvicorn
    from fastapi import FastAPI, HTTPException, Request
    from PIL import Image
    from torchvision import transforms

    model = load_checkpoint(a.pth)
    idx_to_class = {i: c for c, i in model.class_to_idx.items()}
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    app = FastAPI()

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, request: Request, top_k: int = 5):
        body = await request.body()
        try:
            img = Image.open(io.BytesIO(body)).convert("RGB")
        except Exception as e:  # noqa: BLE001 - any decoder error is the client's
            raise HTTPException(status_code=400, detail=f"body: {e}")
        x = tf(img).unsqueeze(0)
        with torch.inference_mode():
            probs = model(x).exp()[0]
        p, i = probs.topk(min(top_k, probs.numel()))
        top = [{"index": int(j), "folder": idx_to_class[int(j)], "prob": float(q)} for q, j in zip(p, i)]
        return {"model": name, "predictions": [{"image": "body", "top": top}]}

    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
