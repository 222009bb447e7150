"""Trainable throughput: images/s of a trial's training loop (trainables.classifier) against a
bare PyTorch loop on the same model, batch, data and device, side by side in one run.

    python benchmarks/trainable_throughput.py [--threads 2]

Target: >= 0.9x.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import REPO  # also puts this checkout on the import path


def bare_images_per_s(model: str, weights: str, data, batch_size: int, threads: int) -> float:
    from trainables.models import build_model, input_normalization

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_model(model, num_classes=len(data.classes), weights=weights)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in input_normalization(net, weights))
    x = torch.as_tensor(data.train_images)
    y = torch.as_tensor(data.train_labels)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    seconds = 0.0
    for epoch in range(2):  # the first epoch warms up, the second is timed
        started = time.perf_counter()
        for index in torch.randperm(len(x)).split(batch_size):
            if len(index) < 2:
                continue
            loss = torch.nn.functional.cross_entropy(net((x[index].float() / 255 - mean) / std), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - started
    return len(x) / seconds


def main() -> None:
    from trainables.classifier import train_classifier
    from trainables.data import load_dataset
    from trainables.split import split_indices, trial_data

    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"checkout {REPO}, {args.threads} threads, digits at 32 px, batch 64")
    images = load_dataset("digits", 32)
    data = trial_data(images, split_indices(images.labels, 0.2, 0.2, seed=0))
    for model, weights in (("scratch_resnet", "none"), ("tf_efficientnet_lite0", "offline")):
        trial, bare = [], []
        for _ in range(2):  # alternated, best of two each: the order of the two does not decide
            reports: list[dict] = []
            config = {"model": model, "weights": weights, "batch_size": 64, "max_epochs": 2, "threads": args.threads}
            train_classifier(config, data, reports.append)
            trial.append(reports[-1]["images_per_s"])
            bare.append(bare_images_per_s(model, weights, data, 64, args.threads))
        print(f"{model:24s} trial {max(trial):7.1f} img/s   bare loop {max(bare):7.1f} img/s   "
              f"ratio {max(trial) / max(bare):.2f}   (runs: trial {[round(t) for t in trial]}, bare {[round(b) for b in bare]})")  # fmt: skip

if __name__ == "__main__":
    main()
