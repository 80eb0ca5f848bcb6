#!/usr/bin/env python3
"""PyTorch reference for `crates/infer/examples/bench_predict.rs`: prediction latency, cold and warm.

Same network as the Rust side: the Rust example writes `target/bench/predict-lite0.safetensors`
(EfficientNet-Lite0 + the seed's head, 102 classes); this script converts it once (untimed) into a
seed-style PyTorch checkpoint `target/bench/predict-lite0.pth` = {'state_dict', 'class_to_idx', 'arch',
'hidden_units'} for an efficientnet_lite_pytorch model whose `_fc` is
Sequential(Linear(1280, 512), ReLU, Dropout(0.2), Linear(512, 102), LogSoftmax).

- cold: spawns `predict_pytorch.py --single IMAGE --checkpoint X.pth --category-names JSON` (the
  seed's predict.py: import torch/torchvision, torch.load, build the model, PIL + torchvision
  transforms, forward, top-5, print) and times spawn to exit; median of --runs runs after one
  untimed run (same protocol as the Rust side);
- warm: loads the model in-process once, then predicts --images validation images (the same ones
  the Rust side uses) in batches of --batch: torchvision ImageFolder-style loading through a
  DataLoader with 2 persistent workers, channels_last, eval, torch.inference_mode; one untimed pass,
  then one timed pass → images/s.

  predict_pytorch.py [--json] [--data DIR] [--runs N] [--images N] [--batch N]
  predict_pytorch.py --single IMAGE --checkpoint X.pth [--category-names JSON]

With --json the last stdout line is {"cold_s", "cold_runs_s", "warm_img_s", "load_s", ...}.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_model(num_classes, hidden=512):
    from torch import nn
    from efficientnet_lite_pytorch import EfficientNet
    model = EfficientNet.from_name("efficientnet-lite0")
    model._dropout = nn.Identity()
    model._fc = nn.Sequential(nn.Linear(1280, hidden), nn.ReLU(), nn.Dropout(0.2),
                              nn.Linear(hidden, num_classes), nn.LogSoftmax(dim=1))
    return model


def load_checkpoint(path):
    """The seed's load_checkpoint: rebuild the network and load its weights."""
    import torch
    ckpt = torch.load(path)
    model = build_model(len(ckpt["class_to_idx"]), ckpt["hidden_units"])
    model.load_state_dict(ckpt["state_dict"])
    model.class_to_idx = ckpt["class_to_idx"]
    return model.eval()


def single(a):
    """The cold path, as one fresh process: everything from imports to the printed answer."""
    import torch
    from PIL import Image
    from torchvision import transforms
    model = load_checkpoint(a.checkpoint)
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    x = tf(Image.open(a.single).convert("RGB")).unsqueeze(0)
    with torch.inference_mode():
        probs = torch.exp(model(x))
    top_p, top_i = probs.topk(5, dim=1)
    idx_to_class = {v: k for k, v in model.class_to_idx.items()}
    names = {}
    if a.category_names:
        with open(a.category_names) as f:
            names = json.load(f)
    print(a.single)
    for rank, (p, i) in enumerate(zip(top_p[0].tolist(), top_i[0].tolist()), 1):
        folder = idx_to_class[i]
        print(f"  {rank}. {names.get(folder, folder):<28} {100 * p:6.2f}%  [{folder}]")


def export(petal_path, pth_path):
    """petal checkpoint (safetensors + metadata) -> seed-style .pth; untimed."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file
    if not os.path.exists(petal_path):
        raise SystemExit(f"{petal_path} is missing: run the Rust side first "
                         "(cargo run --release -p infer --example bench_predict)")
    with safe_open(petal_path, "pt") as f:
        meta = json.loads(f.metadata()["petal"])
    classes = sorted(meta["classes"], key=lambda c: c["index"])
    hidden = meta["head"]["hidden"]
    if len(hidden) != 1:
        raise SystemExit(f"{petal_path}: expected a head with one hidden layer, found {hidden}")
    # A trained checkpoint also holds its optimiser and RNG state (checkpoint::OPTIMIZER_PREFIX,
    # RNG_PREFIX): not part of the network.
    tensors = {k: v for k, v in load_file(petal_path).items() if not k.startswith(("optimizer/", "rng/"))}
    sd = {("_fc." + k[len("classifier."):] if k.startswith("classifier.") else k): v for k, v in tensors.items()}
    model = build_model(len(classes), hidden[0])
    model.load_state_dict(sd, strict=True)
    ckpt = {"state_dict": model.state_dict(), "class_to_idx": {c["folder"]: c["index"] for c in classes},
            "arch": "efficientnet-lite0", "hidden_units": hidden[0]}
    tmp = pth_path + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, pth_path)


def valid_images(data):
    """(path, label) of the valid split in ImageFolder order."""
    from torchvision import datasets
    return datasets.ImageFolder(os.path.join(data, "valid")).samples


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json", action="store_true")
    p.add_argument("--data", default="../shared/data/flowers102-mini")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--petal-checkpoint", default=os.path.join(ROOT, "target/bench/predict-lite0.safetensors"))
    p.add_argument("--pth", default=os.path.join(ROOT, "target/bench/predict-lite0.pth"))
    p.add_argument("--single")
    p.add_argument("--checkpoint")
    p.add_argument("--category-names")
    a = p.parse_args()
    if a.single:
        if not a.checkpoint:
            raise SystemExit("--single needs --checkpoint")
        return single(a)

    import torch
    from PIL import Image
    from torchvision import transforms
    export(a.petal_checkpoint, a.pth)
    samples = valid_images(a.data)
    names = os.path.join(a.data, "cat_to_name.json")

    # Cold: one untimed run, then a.runs timed runs, each a fresh interpreter.
    image = samples[0][0]
    cmd = [sys.executable, os.path.abspath(__file__), "--single", image, "--checkpoint", a.pth]
    if os.path.exists(names):
        cmd += ["--category-names", names]

    def cold_once():
        t = time.perf_counter()
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        secs = time.perf_counter() - t
        if out.returncode != 0:
            raise SystemExit(f"cold predict failed: {out.stderr}")
        return secs, out.stdout

    _, first = cold_once()
    top1 = first.splitlines()[1].strip() if len(first.splitlines()) > 1 else ""
    cold = [cold_once()[0] for _ in range(a.runs)]
    cold_s = sorted(cold)[len(cold) // 2] if len(cold) % 2 else sum(sorted(cold)[len(cold) // 2 - 1:len(cold) // 2 + 1]) / 2
    print(f"cold predict of {image}: median {cold_s:.3f}s over {a.runs} runs {[round(c, 3) for c in cold]}; top-1 {top1}",
          file=sys.stderr)

    # Warm: in-process, batched.
    t = time.perf_counter()
    model = load_checkpoint(a.pth).to(memory_format=torch.channels_last)
    load_s = time.perf_counter() - t
    step = max(len(samples) // a.images, 1)
    paths = [s[0] for s in samples[::step][:a.images]]
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return tf(Image.open(paths[i]).convert("RGB"))

    loader = torch.utils.data.DataLoader(Files(), batch_size=a.batch, num_workers=a.workers,
                                         persistent_workers=a.workers > 0)

    def one_pass():
        n = 0
        with torch.inference_mode():
            for x in loader:
                probs = torch.exp(model(x.contiguous(memory_format=torch.channels_last)))
                probs.topk(5, dim=1)
                n += len(x)
        return n

    one_pass()
    t = time.perf_counter()
    n = one_pass()
    warm_img_s = n / (time.perf_counter() - t)
    print(f"warm predict: {n} images in batches of {a.batch}: {warm_img_s:.2f} img/s (load {load_s:.3f}s)", file=sys.stderr)
    out = {"impl": "pytorch", "cold_s": round(cold_s, 4), "cold_runs_s": [round(c, 4) for c in cold],
           "warm_img_s": round(warm_img_s, 3), "load_s": round(load_s, 4), "images": n, "batch": a.batch,
           "threads": torch.get_num_threads(), "workers": a.workers, "top1": top1}
    if a.json:
        print(json.dumps(out, separators=(",", ":")))
    else:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
