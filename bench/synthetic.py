"""Synthetic catalog distractors whose descriptors come from real photos' descriptor distributions.

Used by `bench_scale.py` to fill a catalog with up to millions of entries fast.

1. A *pool* of real views: cakes cut at random places and sizes from real
   photos (scikit-image's bundled photos whose names are NOT held out by
   `pipeline.training.data.is_held_out`, so never a source of
   `bench/make_discs.py`'s evaluation benchmark, plus procedural leaf textures
   drawn with key (`DISTRACTOR_KEY`, seed), a key that training (0),
   calibration (1) and benchmarks (2) never draw), each photographed as a
   phone shot (`pipeline.training.views.disc_shot`: any rotation, tilt, zoom,
   light, table, JPEG) and saved as a JPEG file. Every view is described by
   the product's own code: `Engine.prepare` (decode, LBP histogram, SIFT
   keypoints) and `Engine.embed` (the encoder).
2. *Distractors* are recombinations of pool views, vectorised in chunks:
   entry e takes a view a and, half the time, a second view b with weight
   f in [0.2, 0.5] (else f = 0):
   * embedding = unit((1 - f) E[a] + f E[b] + noise), noise ~ N(0, `EMB_NOISE`^2 / D) per component;
   * LBP = (1 - f) L[a] + f L[b] + small noise, each (P, R) block renormalised to sum 1;
   * keypoints: walk view a's keypoints in their stored (strongest first)
     order; slot j takes view b's j-th keypoint instead with probability f
     (when b has one), and is dropped with probability d in [0, 0.3]; points
     jittered by N(0, 1 px) (clipped to the image), descriptors by a small
     integer noise (+-`DESC_NOISE`), clipped to uint8.
   Each entry gets a unique label (`distractor0000042`) and sha256 (of
   ``teaprint-distractor:<seed>:<i>``); entry i is the same for a given pool
   and seed whatever the other entries (chunk k of `CHUNK` entries draws
   from ``default_rng([seed, 7, k])``).

Nothing here reads a benchmark folder or KTH-TIPS.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

CHUNK = 10_000  # entries generated (and registered) together
DISTRACTOR_KEY = 3  # first element of the procedural texture key: 0 train, 1 calibration, 2 benchmark, 3 distractors
EMB_NOISE = 0.10  # norm of the noise added to a mixed embedding (before renormalising)
LBP_NOISE = 0.002  # std of the noise added to each LBP bin (before renormalising)
POINT_JITTER_PX = 1.0
DESC_NOISE = 2  # descriptor bytes move by an integer in [-DESC_NOISE, DESC_NOISE]
VIEW_SIZE = 384  # side of a pool view photo (make_discs.py's default --size)


@dataclass(frozen=True)
class Pool:
    """Real views' descriptors, flat.

    Attributes
    ----------
    names : list of str
        Source and view of each pool view (``skimage:brick.png#3``).
    embeddings : ndarray (V, D) float32, unit rows
    lbp : ndarray (V, B) float32
    blocks : tuple of int
        Lengths of the LBP (P, R) blocks (each sums to 1).
    points : ndarray (M, 2) float32
        Every view's keypoints, view after view, strongest first within a view.
    descriptors : ndarray (M, W) uint8
    offsets, counts, sides : ndarray (V,) int64
        Where each view's keypoints start in `points`, how many, the working image's side.
    local : bool
        Whether views carry keypoints (`local.enabled`).
    prepare_s : float
        Wall time spent rendering, preparing and embedding the views.
    """

    names: list[str]
    embeddings: np.ndarray
    lbp: np.ndarray
    blocks: tuple[int, ...]
    points: np.ndarray
    descriptors: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    sides: np.ndarray
    local: bool
    prepare_s: float = 0.0

    def __len__(self) -> int:
        return len(self.names)


# ----------------------------------------------------------------- the pool of real views


def pool_sources(seed: int, procedural: int = 32) -> list:
    """The photos views are cut from: non-held-out scikit-image photos, then procedural textures with key (3, seed).

    Returns
    -------
    list of pipeline.training.data.Source
    """
    from pipeline.training import data as tdata

    sources = [s for s in tdata.skimage_sources() if not tdata.is_held_out(s.name)]
    sources += [s for s in tdata.procedural_sources((DISTRACTOR_KEY, seed), procedural, size=512) if not tdata.is_held_out(s.name)]
    return sources


def render_views(out_dir: Path, seed: int, per_photo: int = 6, per_texture: int = 3, procedural: int = 32,
                 extra: int = 1) -> tuple[list[Path], list[str], list[Path]]:
    """Write the pool's view photos (JPEG) under `out_dir`.

    Each view is a cake of random centre and radius (0.2-0.48 of the
    photo's shorter side) cut from a source and shot once. `extra` more
    views (of other random cakes) are written apart, for a caller that
    needs real photos that are not in the pool (e.g. one photo to add).

    Returns
    -------
    (paths, names, extra_paths)
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2026])
    paths, names = [], []
    sources = pool_sources(seed, procedural)
    jobs = [(s, per_photo if s.name.startswith("skimage:") else per_texture) for s in sources]
    for k, (source, count) in enumerate(jobs):
        for v in range(count):
            shot = _cake_shot(source.image, rng)
            path = out_dir / f"view{k:03d}-{v}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(shot, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            paths.append(path)
            names.append(f"{source.name}#{v}")
    extra_paths = []
    for i in range(extra):
        source = jobs[int(rng.integers(len(jobs)))][0]
        path = out_dir / f"extra{i:03d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(_cake_shot(source.image, rng), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        extra_paths.append(path)
    return paths, names, extra_paths


def _cake_shot(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from pipeline.training import views

    h, w = image.shape[:2]
    radius = float(rng.uniform(0.2, 0.48)) * min(h, w)
    centre = (float(rng.uniform(radius, w - radius)), float(rng.uniform(radius, h - radius)))
    shot, _ = views.disc_shot(image, rng, centre, radius, out_size=VIEW_SIZE, fill=float(rng.uniform(0.75, 0.95)),
                              quality_range=(50, 95), scale_range=(0.7, 1.4), max_tilt=30.0)
    return shot


def build_pool(engine, config, out_dir: Path, seed: int, per_photo: int = 6, per_texture: int = 3, procedural: int = 32,
               extra: int = 1) -> tuple[Pool, list[Path]]:
    """Render the views (`render_views`) and describe them with `engine` (prepare + embed); `config` is its Config.

    A view the product refuses (too few keypoints, several cakes, ...) is
    left out. Returns the pool and the extra views' paths.
    """
    from pipeline.intake import IntakeError

    started = time.perf_counter()
    paths, names, extra_paths = render_views(out_dir, seed, per_photo, per_texture, procedural, extra)
    prepared, kept = [], []
    for path, name in zip(paths, names):
        try:
            p = engine.prepare(path, for_catalog=True)
        except IntakeError:
            continue
        if p.local is not None and len(p.local) == 0:
            continue
        prepared.append(p)
        kept.append(name)
    if not prepared:
        raise RuntimeError("no pool view could be prepared")
    embeddings = engine.embed(prepared).astype(np.float32)
    lbp = np.stack([p.lbp for p in prepared]).astype(np.float32)
    blocks = tuple(p + 2 for p, _ in config.lbp.points_radii)
    if sum(blocks) != lbp.shape[1]:
        raise ValueError(f"LBP length {lbp.shape[1]} does not match lbp.points_radii {config.lbp.points_radii}")
    local = prepared[0].local is not None
    if local:
        counts = np.array([len(p.local) for p in prepared], np.int64)
        points = np.concatenate([p.local.points for p in prepared]).astype(np.float32)
        descriptors = np.ascontiguousarray(np.concatenate([p.local.descriptors for p in prepared]))
        sides = np.array([p.local.side for p in prepared], np.int64)
    else:
        counts = np.zeros(len(prepared), np.int64)
        points, descriptors = np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
        sides = np.zeros(len(prepared), np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    pool = Pool(kept, _unit(embeddings), lbp, blocks, points, descriptors, offsets, counts, sides, local,
                time.perf_counter() - started)
    return pool, extra_paths


# ----------------------------------------------------------------- recombination


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def distractor_sha256(seed: int, i: int) -> str:
    return hashlib.sha256(f"teaprint-distractor:{seed}:{i}".encode()).hexdigest()


def distractor_label(i: int) -> str:
    return f"distractor{i:07d}"


def chunk(pool: Pool, k: int, count: int, seed: int, folder: Path, chunk_size: int = CHUNK) -> list:
    """Entries `k * chunk_size` .. `k * chunk_size + count - 1` (a list of `NewEntry`).

    `folder` is where their (never written) photo files would be: each
    entry's path is ``folder/<label>.jpg``.
    """
    from pipeline.catalog import NewEntry
    from pipeline.features.local import LocalFeatures

    rng = np.random.default_rng([seed, 7, k])
    start = k * chunk_size
    v = len(pool)
    a = rng.integers(v, size=count)
    b = (a + 1 + rng.integers(v - 1, size=count)) % v if v > 1 else a.copy()
    f = np.where(rng.random(count) < 0.5, 0.0, rng.uniform(0.2, 0.5, count)).astype(np.float32)

    d = pool.embeddings.shape[1]
    emb = (1 - f)[:, None] * pool.embeddings[a] + f[:, None] * pool.embeddings[b]
    emb += rng.normal(0.0, EMB_NOISE / np.sqrt(d), (count, d)).astype(np.float32)
    emb = _unit(emb)

    lbp = (1 - f)[:, None] * pool.lbp[a] + f[:, None] * pool.lbp[b]
    lbp += rng.normal(0.0, LBP_NOISE, lbp.shape).astype(np.float32)
    np.maximum(lbp, 0.0, out=lbp)
    s = 0
    for width in pool.blocks:
        block = lbp[:, s : s + width]
        block /= np.maximum(block.sum(axis=1, keepdims=True), 1e-12)
        s += width
    lbp = lbp.astype(np.float32)

    locals_: list = [None] * count
    if pool.local:
        locals_ = _keypoints(pool, rng, a, b, f)

    base = Path(folder)
    out = []
    for j in range(count):
        i = start + j
        label = distractor_label(i)
        out.append(NewEntry(sha256=distractor_sha256(seed, i), path=str(base / f"{label}.jpg"), label=label,
                            embedding=emb[j], lbp=lbp[j],
                            local=LocalFeatures(*locals_[j]) if locals_[j] is not None else None))
    return out


def _keypoints(pool: Pool, rng: np.random.Generator, a: np.ndarray, b: np.ndarray, f: np.ndarray) -> list:
    """(points, descriptors, side) per entry, see the module docstring."""
    count = len(a)
    n_slots = pool.counts[a]
    total = int(n_slots.sum())
    owner = np.repeat(np.arange(count), n_slots)
    first = np.concatenate([[0], np.cumsum(n_slots)[:-1]])
    rank = np.arange(total) - np.repeat(first, n_slots)
    take_b = (rng.random(total) < f[owner]) & (rank < pool.counts[b][owner])
    view = np.where(take_b, b[owner], a[owner])
    index = pool.offsets[view] + rank
    drop = rng.uniform(0.0, 0.3, count)
    keep = rng.random(total) >= drop[owner]
    keep[first] = True  # never an entry without keypoints
    index, owner = index[keep], owner[keep]
    counts = np.bincount(owner, minlength=count)

    sides = pool.sides[a]
    points = pool.points[index] + rng.normal(0.0, POINT_JITTER_PX, (len(index), 2)).astype(np.float32)
    limit = (sides[owner] - 1).astype(np.float32)[:, None]
    np.clip(points, 0.0, limit, out=points)
    points = points.astype(np.float32)

    desc = pool.descriptors[index]
    table = np.random.default_rng(int(rng.integers(2**31))).integers(-DESC_NOISE, DESC_NOISE + 1, (4096, desc.shape[1])).astype(np.int16)
    rows = rng.integers(len(table), size=len(index))
    step = 262_144
    for s in range(0, len(index), step):  # in blocks: no full int16 copy of the chunk
        block = desc[s : s + step].astype(np.int16) + table[rows[s : s + step]]
        desc[s : s + step] = np.clip(block, 0, 255).astype(np.uint8)

    ends = np.cumsum(counts)
    starts = ends - counts
    return [(points[s:e], desc[s:e], int(side)) for s, e, side in zip(starts, ends, sides)]


def generate(pool: Pool, n: int, seed: int, folder: Path, chunk_size: int = CHUNK) -> Iterator[list]:
    """`n` distractors as lists of at most `chunk_size` `NewEntry`s."""
    for k, start in enumerate(range(0, n, chunk_size)):
        yield chunk(pool, k, min(chunk_size, n - start), seed, folder, chunk_size)


def summary(pool: Pool) -> dict:
    """A few facts about the pool, for the benchmark's report."""
    sims = pool.embeddings @ pool.embeddings.T
    off = sims[~np.eye(len(pool), dtype=bool)] if len(pool) > 1 else np.zeros(1)
    return {
        "views": len(pool),
        "sources": len({n.split("#", 1)[0] for n in pool.names}),
        "keypoints_mean": round(float(pool.counts.mean()), 1) if len(pool) else 0.0,
        "embedding_cos_p50": round(float(np.median(off)), 3),
        "embedding_cos_p99": round(float(np.percentile(off, 99)), 3),
        "prepare_s": round(pool.prepare_s, 2),
    }

