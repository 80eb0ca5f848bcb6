"""torchvision + PIL reference for `cargo xtask bench` (preprocessing throughput).

    python bench/preprocess_torchvision.py --data ../shared/data/flowers102-fullres-sample --json

Same transforms as the Rust pipeline (crates/preprocess): eval = Resize(256), CenterCrop(224),
ToTensor, Normalize; train = the seed recipe RandomRotation(30), RandomResizedCrop(224),
RandomHorizontalFlip, ToTensor, Normalize. ImageFolder over the `train` split, DataLoader with
batch_size 32 and num_workers=2; best of 2 passes after a page-cache warm-up, like the Rust
benchmark. torchvision has no decoded-image cache, so the cached_* keys are null.
"""
import argparse
import json
import os
import time

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
EVAL = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                           transforms.Normalize(MEAN, STD)])
TRAIN = transforms.Compose([transforms.RandomRotation(30), transforms.RandomResizedCrop(224),
                            transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                            transforms.Normalize(MEAN, STD)])


def run(root, tf, shuffle, passes=2):
    ds = datasets.ImageFolder(root, transform=tf)
    best = 0.0
    for _ in range(passes):
        dl = DataLoader(ds, batch_size=32, shuffle=shuffle, num_workers=2)
        t = time.perf_counter()
        n = 0
        for x, y in dl:
            n += x.shape[0]
        best = max(best, n / (time.perf_counter() - t))
    return best, len(ds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/flowers102-fullres-sample")
    ap.add_argument("--json", action="store_true")
    # The harness passes petal's flags to both sides; the reference times no stages.
    ap.add_argument("--stages", action="store_true", help="ignored: petal's per-stage times have no reference here")
    a = ap.parse_args()
    root = os.path.join(a.data, "train")
    for dirpath, _, files in os.walk(root):  # page-cache warm-up
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                fh.read()
    eval_s, n = run(root, EVAL, False)
    train_s, _ = run(root, TRAIN, True)
    out = {"tool": "torchvision", "torch": torch.__version__, "images": n, "workers": 2, "batch_size": 32,
           "eval_img_s": eval_s, "train_img_s": train_s, "cached_eval_img_s": None, "cached_train_img_s": None}
    # --json: one compact object on the last stdout line (the protocol of `cargo xtask bench`).
    print(json.dumps(out) if a.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
