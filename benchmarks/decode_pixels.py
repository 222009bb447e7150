"""How far the cache's pixels moved when the decode became ``trainables.decode`` (JPEG reduced on
decode, PIL's resize of the crop) from the full-size torchvision decode before it
(benchmarks/_decode_before.py), on the same files: the mean absolute difference in grey levels
(0-255, over every pixel and channel), the worst file's mean and the largest single difference.

    python benchmarks/decode_pixels.py [--generated 1000] [--workdir /tmp/decode-pixels]

Files: the generated set of benchmarks/data_loading.py (random 80-400 px crops of scikit-learn's
two sample photos, JPEG quality 85) and the two photos themselves saved as JPEGs (quality 90) at
a longer side of 1280 (upscaled), 640 (their own size), 400 and 200 px. Stored sizes 224, 128, 64
and 32 px. Besides the shipped margin (DRAFT_MARGIN: reduce while >= 2x the stored size stays),
it prints margin 1 (the smallest scale that still covers the stored size) and 0 (no reduction:
what PIL's resize alone changes). Target: mean within 1 grey level; tests/trainables/test_decode.py
holds the photos' bound. Deterministic: no timing, so the machine's load does not matter.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import REPO  # noqa: F401  (puts this checkout on the import path)
from _decode_before import load_image_before
from data_loading import generate

SIZES = (224, 128, 64, 32)
PHOTO_SIDES = (1280, 640, 400, 200)


def photos(folder: Path) -> list[Path]:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, pixels in enumerate(load_sample_images().images):
        photo = Image.fromarray(pixels)
        for side in PHOTO_SIDES:
            path = folder / f"photo{k}-{side}.jpg"
            if not path.is_file():
                scaled = photo.resize(
                    (side, round(side * photo.height / photo.width)), Image.Resampling.LANCZOS
                )
                scaled.save(path, quality=90)
            paths.append(path)
    return paths


def differences(
    paths: list[Path], size: int, margins: tuple[int, ...]
) -> dict[int, tuple[float, float, int]]:
    """Per margin: (mean |difference| over all pixels, the worst file's mean, the largest) for ``paths``."""
    from trainables.decode import decode_image

    sums = {m: [0, 0, 0, 0.0] for m in margins}  # total, count, largest, worst file's mean
    for path in paths:
        before = load_image_before(path, size).astype(np.int16)
        for margin in margins:
            d = np.abs(decode_image(path, size, draft_margin=margin).astype(np.int16) - before)
            total, count, largest, worst = sums[margin]
            sums[margin] = [
                total + int(d.sum()),
                count + d.size,
                max(largest, int(d.max())),
                max(worst, float(d.mean())),
            ]
    return {m: (total / count, worst, largest) for m, (total, count, largest, worst) in sums.items()}


def main() -> None:
    from trainables.decode import DRAFT_MARGIN

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generated", type=int, default=1000, help="files of the generated set to compare")
    parser.add_argument("--workdir", default="/tmp/decode-pixels")
    args = parser.parse_args()
    work = Path(args.workdir)
    generate(work / "generated", args.generated)
    sets = {f"generated ({args.generated} files)": sorted((work / "generated").rglob("*.jpg")),
            f"photos ({len(PHOTO_SIDES) * 2} files)": photos(work / "photos")}  # fmt: skip
    print("grey levels (0-255) between the decode and the one before it: mean / worst file's mean / max")
    for name, paths in sets.items():
        for size in SIZES:
            found = differences(paths, size, (DRAFT_MARGIN, 1, 0))
            cells = [
                f"margin {m}{' (shipped)' if m == DRAFT_MARGIN else ''}: {mean:.3f} / {worst:.3f} / {largest}"
                for m, (mean, worst, largest) in found.items()
            ]
            print(f"{name:24s} {size:3d} px  " + "; ".join(cells))


if __name__ == "__main__":
    main()
