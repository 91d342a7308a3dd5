"""Training of the keypoint vote's visual words (`pipeline.search.vocabulary.Vocabulary`).

`python -m pipeline.training.vocabulary [--out FILE]` reproduces the shipped
`pipeline/data/models/teaprint-words.npz` (`make train` runs it): SIFT
descriptors of random views of the encoder's training sources, clustered by
spherical k-means into a 128 x 128 tree.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from pipeline.features.local import root_sift
from pipeline.search.vocabulary import SHIPPED, Vocabulary, vocab_id


def _kmeans(data: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 12) -> np.ndarray:
    """Spherical k-means (unit centres, dot-product assignment) with k-means++-like seeding by sampling."""
    if len(data) <= k:
        extra = data[rng.integers(0, len(data), k - len(data))] if len(data) else np.zeros((k, data.shape[1]), np.float32)
        return np.concatenate([data, extra]).astype(np.float32)
    centres = data[rng.choice(len(data), k, replace=False)].copy()
    for _ in range(iterations):
        assign = np.concatenate([np.argmax(chunk @ centres.T, axis=1) for chunk in np.array_split(data, max(1, len(data) // 50_000))])
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, data)
        counts = np.bincount(assign, minlength=k)
        empty = counts == 0
        sums[empty] = data[rng.choice(len(data), int(empty.sum()), replace=False)]
        centres = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return centres.astype(np.float32)


def train(descriptors: np.ndarray, branch: tuple[int, int] = (128, 128), seed: int = 0) -> Vocabulary:
    """A vocabulary tree trained on SIFT descriptors (uint8, (K, 128))."""
    rng = np.random.default_rng(seed)
    d = root_sift(descriptors)
    top = _kmeans(d, branch[0], rng)
    first = np.argmax(d @ top.T, axis=1)
    leaves = np.stack([_kmeans(d[first == i], branch[1], rng, iterations=8) for i in range(branch[0])])
    return Vocabulary(top, leaves, vocab_id(top, leaves))


def training_descriptors(views: int, seed: int) -> np.ndarray:
    """SIFT descriptors of random views (rotation, scale, crop) of the encoder's training sources.

    scikit-image's photos outside the held-out split and procedural textures
    with training keys (0, ...): never a benchmark, calibration or KTH-TIPS photo.
    """
    from pipeline.config import default_config
    from pipeline.features.local import extract_configured
    from pipeline.training.data import is_held_out, procedural_sources, skimage_sources

    sources = [s.image for s in skimage_sources() if not is_held_out(s.name)]
    sources += [s.image for s in procedural_sources((0, seed, 99), 64, size=512)]
    rng = np.random.default_rng(seed)
    cfg = default_config().local
    out = []
    for i in range(views):
        image = sources[i % len(sources)]
        h, w = image.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(0, 360)), float(rng.uniform(0.7, 1.6)))
        view = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        out.append(extract_configured(view, cfg).descriptors)
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the visual-word vocabulary of the catalog-wide keypoint vote.")
    parser.add_argument("--out", type=Path, default=SHIPPED)
    parser.add_argument("--views", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    descriptors = training_descriptors(args.views, args.seed)
    vocab = train(descriptors, seed=args.seed)
    vocab.save(args.out)
    print(f"{args.out}: {vocab.size} words from {len(descriptors)} descriptors of {args.views} views; id {Vocabulary.load(args.out).vocab_id}")


if __name__ == "__main__":
    main()
