"""Visual words: a two-level k-means tree over RootSIFT descriptors.

The catalog-wide keypoint vote (`pipeline.search.votes`) needs every
descriptor of every entry to fall into a small integer bucket, so that adding
a cake appends a few integers instead of rebuilding a nearest-neighbour index
(FLANN KD-trees were rebuilt per registration: 15 s at 10k entries; issue
13). A vocabulary tree (Nister & Stewenius 2006) with `branch` x `branch`
leaves assigns a descriptor with 2 x `branch` dot products. It is trained
once, offline, on the encoder's training sources (never on a benchmark's or
KTH-TIPS photos) and shipped beside the encoder: `make train` reproduces it
(`python -m pipeline.training.vocabulary`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.features.local import root_sift

_ENCODE_AT_ONCE = 32_768  # descriptors encoded together (~16 MB per float32 intermediate)
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "models" / "teaprint-words.npz"


@dataclass(frozen=True)
class Vocabulary:
    """A two-level vocabulary tree.

    Attributes
    ----------
    top : ndarray, shape (B1, 128), dtype float32
        First-level centres (RootSIFT space, unit rows).
    leaves : ndarray, shape (B1, B2, 128), dtype float32
        Second-level centres under each first-level one.
    vocab_id : str
        16 hex digits of the centres' sha256 (an index built with another vocabulary is rebuilt).
    """

    top: np.ndarray
    leaves: np.ndarray
    vocab_id: str

    @property
    def size(self) -> int:
        return int(self.leaves.shape[0] * self.leaves.shape[1])

    @classmethod
    def load(cls, path: Path = SHIPPED) -> "Vocabulary":
        with np.load(path) as data:
            top, leaves = data["top"].astype(np.float32), data["leaves"].astype(np.float32)
        return cls(top, leaves, vocab_id(top, leaves))

    def save(self, path: Path) -> None:
        np.savez_compressed(path, top=self.top.astype(np.float16), leaves=self.leaves.astype(np.float16))

    def encode(self, descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The word of each SIFT descriptor and its 64-bit Hamming-embedding signature.

        The signature (Jegou, Douze & Schmid 2008) is the sign of 64 fixed
        random projections of the descriptor's residual to its word's centre:
        two descriptors in one word whose signatures differ in many bits are
        not the same point, which a bare word cannot tell. It lets the vote
        count only real matches among the thousands of entries sharing a word.

        Returns
        -------
        words : ndarray, shape (K,), dtype int64
        signatures : ndarray, shape (K,), dtype uint64
        """
        if len(descriptors) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.uint64)
        if len(descriptors) > _ENCODE_AT_ONCE:  # a store rebuild encodes 600k descriptors per read: bounded float copies
            parts = [self.encode(descriptors[i:i + _ENCODE_AT_ONCE]) for i in range(0, len(descriptors), _ENCODE_AT_ONCE)]
            return np.concatenate([w for w, _ in parts]), np.concatenate([g for _, g in parts])
        d = root_sift(descriptors)
        words = self._words(d)
        return words, self._signatures(d, words)

    def encode_nearest(self, descriptors: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each SIFT descriptor's `count` nearest words (multiple assignment) and its signature in each.

        The first is the greedy descent's word (`encode`'s, under which the
        catalog files its descriptors), the others the nearest leaves under
        the descriptor's two nearest first-level centres. A true match falls
        in the same single word as its catalog descriptor only about a quarter
        of the time on hard re-shots of cakes (bench/README.md, stop 36): a
        query assigned to several words finds more of its matches, while the
        catalog keeps one word per descriptor.

        Returns
        -------
        owners : ndarray, shape (K * count,), dtype int64
            The descriptor each row belongs to, ascending.
        words : ndarray, shape (K * count,), dtype int64
        signatures : ndarray, shape (K * count,), dtype uint64
        """
        branch = self.leaves.shape[1]
        if not 1 <= count <= 2 * branch:
            raise ValueError(f"count {count}: between 1 and {2 * branch} words (the leaves of two first-level centres)")
        if len(descriptors) == 0 or count == 1:
            words, signatures = self.encode(descriptors)
            return np.arange(len(words), dtype=np.int64), words, signatures
        d = root_sift(descriptors)
        to_top = d @ self.top.T
        first = np.argmax(to_top, axis=1)  # as `_words` descends
        to_top[np.arange(len(d)), first] = -np.inf
        cells = np.stack([first, np.argmax(to_top, axis=1)], axis=1)
        # Each descriptor's similarity to the leaves of its two cells; its greedy word first, then the nearest others.
        scores = np.concatenate([self._leaf_similarities(d, cells[:, 0]), self._leaf_similarities(d, cells[:, 1])], axis=1)
        scores[np.arange(len(d)), np.argmax(scores[:, :branch], axis=1)] = np.inf
        pick = np.argsort(-scores, axis=1)[:, :count]
        words = (cells[np.arange(len(d))[:, None], pick // branch] * branch + pick % branch).reshape(-1).astype(np.int64)
        owners = np.repeat(np.arange(len(d), dtype=np.int64), count)
        return owners, words, self._signatures(d[owners], words)

    def words(self, descriptors: np.ndarray) -> np.ndarray:
        """The word of each SIFT descriptor.

        Parameters
        ----------
        descriptors : ndarray, shape (K, 128), dtype uint8

        Returns
        -------
        ndarray, shape (K,), dtype int64, in [0, size)
        """
        if len(descriptors) == 0:
            return np.zeros(0, np.int64)
        return self._words(root_sift(descriptors))

    def _words(self, d: np.ndarray) -> np.ndarray:
        first = np.argmax(d @ self.top.T, axis=1)
        return first.astype(np.int64) * self.leaves.shape[1] + np.argmax(self._leaf_similarities(d, first), axis=1)

    def _leaf_similarities(self, d: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Each RootSIFT row's dot product with the leaves under its first-level centre `cells[i]`, shape (K, B2).

        Unit rows: the largest is the nearest leaf. One matrix product per first-level centre present.
        """
        out = np.empty((len(d), self.leaves.shape[1]), np.float32)
        order = np.argsort(cells, kind="stable")
        found, starts = np.unique(cells[order], return_index=True)
        for cell, lo, hi in zip(found.tolist(), starts.tolist(), [*starts[1:].tolist(), len(order)]):
            rows = order[lo:hi]
            out[rows] = d[rows] @ self.leaves[cell].T
        return out

    def _signatures(self, d: np.ndarray, words: np.ndarray) -> np.ndarray:
        """The 64-bit signature of each RootSIFT row's residual to the centre of `words[i]`, shape (K,), uint64."""
        branch = self.leaves.shape[1]
        bits = ((d - self.leaves[words // branch, words % branch]) @ _PROJECTION.T) > 0
        return np.packbits(bits, axis=1, bitorder="little").view("<u8").reshape(-1)


_PROJECTION = np.linalg.qr(np.random.default_rng(20261205).standard_normal((128, 64)))[0].T.astype(np.float32)
"""(64, 128) orthonormal rows: the Hamming-embedding projection, fixed by its seed (part of `vocab_id`)."""


def vocab_id(top: np.ndarray, leaves: np.ndarray) -> str:
    h = hashlib.sha256(_PROJECTION.tobytes())
    h.update(top.astype(np.float16).tobytes())
    h.update(leaves.astype(np.float16).tobytes())
    return h.hexdigest()[:16]
