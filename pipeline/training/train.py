"""`teaprint train`: train the siamese encoder on re-photographed views.

Positive pair = two simulated phone shots of the same object (a region of a
source photo, bare or cut out as a disc and laid on a table); negatives = the
other objects of the batch (NT-Xent, in-batch negatives) or the hardest one
(batch-hard triplet). Each epoch draws a fresh bank of views from a generator
seeded by ``(seed, epoch)``, so an epoch's data does not depend on whether the
run was resumed, and the same --seed gives the same model.

The loop is backend-agnostic Keras 3 (`keras.ops` losses, `Model.fit`, a
checkpoint of plain weight arrays): the same command trains with
KERAS_BACKEND=tensorflow (the default here, on CPU) or KERAS_BACKEND=torch
(on a GPU machine without TensorFlow, ``--train-only``), and a checkpoint made
under one backend is resumed, calibrated and exported under the other. Each
batch's views are drawn from a generator seeded by ``(seed, epoch, batch)``,
so ``--workers`` processes drawing them in parallel give the same data as one.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import sys
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.features.embedding import Encoder, prepare_input
from pipeline.training import data as tdata

DEFAULT_IMAGES = ["skimage", str(tdata.OPENCV_DOC_DIR), "procedural:256"]
DEFAULT_OUT = "models/teaprint-encoder.keras"
STATE_FILE = "state.json"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `teaprint train` options to `parser`."""
    g = parser.add_argument_group("data")
    g.add_argument(
        "--images", nargs="+", default=DEFAULT_IMAGES, metavar="DIR",
        help="folders of photos (a subfolder = photos of one object), 'skimage', 'procedural[:N]' "
        f"(default: {' '.join(DEFAULT_IMAGES)})",
    )
    g.add_argument("--steps", type=int, default=40, help="batches per epoch (default 40)")
    g.add_argument("--batch-size", type=int, default=64, help="objects per batch, 2 views each (default 64)")
    g.add_argument("--disc-prob", type=float, default=0.3, help="share of objects shot as a disc on a table")
    g.add_argument("--hard-prob", type=float, default=0.0,
                   help="share of objects that are a disc seen in a registration shot and a hard re-shot "
                   "(thumb, glare, strong tilt, blur, noise, JPEG 40-80, zoom 0.5-1.2; default 0)")
    g.add_argument("--sibling-prob", type=float, default=0.0,
                   help="share of single photos that give two disjoint discs as each other's negatives (default 0)")
    m = parser.add_argument_group("model")
    m.add_argument("--input-size", type=int, default=96)
    m.add_argument("--channels", type=int, choices=(1, 3), default=1)
    m.add_argument("--width", type=int, default=32)
    m.add_argument("--embedding-dim", type=int, default=128)
    m.add_argument("--rotation-pool", type=int, default=4, help="rotations averaged at embedding time (metadata)")
    m.add_argument("--disc-mask", action=argparse.BooleanOptionalAction, default=False)
    o = parser.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=16)
    o.add_argument("--loss", choices=("ntxent", "triplet"), default="ntxent")
    o.add_argument("--temperature", type=float, default=0.1, help="NT-Xent temperature")
    o.add_argument("--margin", type=float, default=0.3, help="triplet margin (cosine distance)")
    o.add_argument("--lr", type=float, default=2e-3)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                   help="tf.config.experimental.enable_op_determinism (default on)")
    r = parser.add_argument_group("output")
    r.add_argument("--out", type=Path, default=Path(DEFAULT_OUT))
    r.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint (OUT stem + '.ckpt/')")
    r.add_argument("--target-far", type=float, default=0.01, help="false-accept rate the stored threshold meets")
    r.add_argument("--calib-objects", type=int, default=400, help="held-out objects for calibration")
    r.add_argument("--calib-procedural", type=int, default=128, help="held-out procedural textures for calibration")
    r.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop after N epochs in this invocation (checkpoint kept; --resume continues)")
    r.add_argument("--train-only", action="store_true",
                   help="stop after the last epoch's checkpoint: calibration and export are left to a --resume run "
                   "(for a GPU machine without TensorFlow)")
    r.add_argument("--workers", type=int, default=1,
                   help="processes drawing the views (the data do not depend on it; default 1: one thread)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


# ------------------------------------------------------------------ losses


def make_loss(name: str, temperature: float, margin: float) -> Any:
    """The training loss as a `keras.losses.Loss` on one batch.

    A batch is ``concat([view_a, view_b])`` of n objects: row i and row i + n
    (mod 2n) are the two views of one object; ``y_true`` holds each row's group
    (float, compared for equality only). Rows of one group that are not each
    other's positive are masked out: they are not true negatives.
    """
    import keras
    from keras import ops

    class NTXent(keras.losses.Loss):
        """NT-Xent (InfoNCE over the batch, both directions), temperature `temperature`."""

        def call(self, y_true: Any, y_pred: Any) -> Any:
            groups = ops.reshape(y_true, (-1,))
            rows = ops.shape(y_pred)[0]
            idx = ops.arange(rows)
            pos = (idx + rows // 2) % rows
            sim = ops.matmul(y_pred, ops.transpose(y_pred)) / temperature
            same = ops.equal(groups[:, None], groups[None, :])
            is_pos = ops.equal(idx[None, :], pos[:, None])
            sim = ops.where(ops.logical_and(same, ops.logical_not(is_pos)), -1e9, sim)
            return keras.losses.sparse_categorical_crossentropy(pos, sim, from_logits=True)

    class BatchHardTriplet(keras.losses.Loss):
        """For each view-a anchor: its view b against the closest other-group view, cosine margin `margin`."""

        def call(self, y_true: Any, y_pred: Any) -> Any:
            groups = ops.reshape(y_true, (-1,))
            n = ops.shape(y_pred)[0] // 2
            za, zb = y_pred[:n], y_pred[n:]
            pos = ops.sum(za * zb, axis=1)
            sim = ops.matmul(za, ops.transpose(y_pred))
            other = ops.not_equal(groups[:n, None], groups[None, :])
            hardest = ops.max(ops.where(other, sim, -2.0), axis=1)
            return ops.relu(hardest - pos + margin)

    return {"ntxent": NTXent, "triplet": BatchHardTriplet}[name](name=name)


# ------------------------------------------------------------------- data


def _prepare(views: np.ndarray, size: int, channels: int, disc_mask: bool) -> np.ndarray:
    return np.stack([prepare_input(v, size, channels, disc_mask) for v in views])


def batch_views(args: argparse.Namespace, sources: Sequence[tdata.Source], epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch: deterministic in (seed, epoch, index) only.

    Returns
    -------
    x : ndarray, shape (2 * batch, S, S, C), dtype float32 (0-255)
        View a of every object, then view b of every object.
    groups : ndarray, shape (2 * batch,), dtype float32
        Each row's group id (the loss compares them for equality).
    """
    rng = np.random.default_rng([args.seed, epoch, 7, index])
    a, b, groups = tdata.make_pair_bank(sources, rng, args.batch_size, args.input_size, disc_prob=args.disc_prob,
                                        hard_prob=args.hard_prob, sibling_prob=args.sibling_prob)
    x = np.concatenate([_prepare(a, args.input_size, args.channels, args.disc_mask),
                        _prepare(b, args.input_size, args.channels, args.disc_mask)])
    return x, np.concatenate([groups, groups]).astype(np.float32)


_WORKER: dict[str, Any] = {}


def _epoch_sources(args: argparse.Namespace, photos: list[tdata.Source], epoch: int) -> list[tdata.Source]:
    """The photos plus this epoch's procedural textures (cached: every batch of an epoch shares them)."""
    if _WORKER.get("epoch") != epoch:
        extra = tdata.procedural_sources((tdata.TRAIN_KEY, args.seed, epoch), args._procedural) if args._procedural else []
        _WORKER.update(epoch=epoch, sources=list(photos) + extra)
    return _WORKER["sources"]


def _init_worker(args: argparse.Namespace, photos: list[tdata.Source]) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    _WORKER.clear()
    _WORKER.update(args=args, photos=photos)


def _worker_batch(epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    args, photos = _WORKER["args"], _WORKER["photos"]
    return batch_views(args, _epoch_sources(args, photos, epoch), epoch, index)


def epoch_bank(args: argparse.Namespace, photos: list[tdata.Source], epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The views of one epoch, batch after batch: deterministic in (seed, epoch) only.

    Returns
    -------
    x : ndarray, shape (steps * 2 * batch, S, S, C), dtype float32 (0-255)
        Batch i is rows ``[2 * batch * i, 2 * batch * (i + 1))``: its view a, then its view b.
    groups : ndarray, shape (steps * 2 * batch,), dtype float32
    """
    sources = list(photos)
    if args._procedural:
        sources += tdata.procedural_sources((tdata.TRAIN_KEY, args.seed, epoch), args._procedural)
    return _join([batch_views(args, sources, epoch, i) for i in range(args.steps)])


def _join(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _pool(args: argparse.Namespace, photos: list[tdata.Source]) -> Executor:
    """Where epoch banks are drawn: `args.workers` spawned processes, or one thread.

    Spawned, never forked: a fork inherits OpenCV's and the framework's thread
    pools half-made and hung now and then in a child (seen here with torch).
    """
    if args.workers <= 1:
        return ThreadPoolExecutor(max_workers=1)
    return ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(args, photos))


def submit_epoch(pool: Executor, args: argparse.Namespace, photos: list[tdata.Source], epoch: int) -> list[Future]:
    """Start drawing epoch `epoch`'s views; `collect_epoch` gathers them (== `epoch_bank`)."""
    if isinstance(pool, ThreadPoolExecutor):
        return [pool.submit(epoch_bank, args, photos, epoch)]
    return [pool.submit(_worker_batch, epoch, i) for i in range(args.steps)]


def collect_epoch(pending: list[Future]) -> tuple[np.ndarray, np.ndarray]:
    return _join([f.result() for f in pending])


# ------------------------------------------------------------ checkpoint


def checkpoint_dir(out: Path) -> Path:
    """Where the per-epoch checkpoint of a run writing `out` lives."""
    out = Path(out)
    return out.with_name(out.stem + ".ckpt")


_RECIPE_KEYS = ("images", "steps", "batch_size", "disc_prob", "input_size", "channels", "width", "embedding_dim",
                "loss", "temperature", "margin", "lr", "seed", "disc_mask", "hard_prob", "sibling_prob")
# Options that change how a run goes, not what it makes: not part of the recorded command.
_RUN_ONLY = ("help", "resume", "quiet", "stop_after", "train_only", "workers")


def _recipe(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _RECIPE_KEYS}


def save_checkpoint(ckpt_dir: Path, model: Any, optimizer: Any) -> None:
    """Model weights and optimizer variables as plain arrays: readable under any Keras backend."""
    from keras import ops

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    arrays = {f"w{i}": np.asarray(ops.convert_to_numpy(v)) for i, v in enumerate(model.weights)}
    arrays.update({f"o{i}": np.asarray(ops.convert_to_numpy(v)) for i, v in enumerate(optimizer.variables)})
    tmp = ckpt_dir / "ckpt.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, ckpt_dir / "ckpt.npz")


def load_checkpoint(ckpt_dir: Path, model: Any, optimizer: Any) -> None:
    """Restore what `save_checkpoint` wrote (the optimizer must be built)."""
    with np.load(ckpt_dir / "ckpt.npz") as data:
        weights = [data[f"w{i}"] for i in range(len(model.weights))]
        opt = [data[f"o{i}"] for i in range(len(optimizer.variables))]
        if len(data.files) != len(weights) + len(opt):
            raise ValueError(f"{ckpt_dir}: checkpoint holds {len(data.files)} arrays, the model and optimizer {len(weights) + len(opt)}")
    for var, value in zip(model.weights, weights):
        var.assign(value)
    for var, value in zip(optimizer.variables, opt):
        var.assign(value)


def hardware() -> str:
    """What trains: the Keras backend and its device, in words (recorded in the metadata)."""
    import keras

    backend = keras.backend.backend()
    device = f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            device = f"GPU {torch.cuda.get_device_name(0)}"
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        device = f"GPU x{len(gpus)}" if gpus else device
    elif backend == "jax":
        import jax

        device = str(jax.devices()[0])
    return f"{backend} on {device}"


# ------------------------------------------------------------------ train


def training_command(args: argparse.Namespace) -> str:
    """The `teaprint train` command line that reproduces this run (no --resume)."""
    defaults = argparse.ArgumentParser()
    add_train_arguments(defaults)
    parts = ["teaprint", "train"]
    for action in defaults._actions:  # noqa: SLF001 - argparse has no public listing
        dest = action.dest
        if dest in _RUN_ONLY or not action.option_strings:
            continue
        value = getattr(args, dest)
        value = str(value) if isinstance(value, Path) else value
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            parts.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def run_train(args: argparse.Namespace) -> int:
    """Train, checkpoint each epoch, calibrate, save `args.out` + metadata. Returns 0."""
    t_start = time.time()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sources = tdata.resolve_sources(args.images, split="train")
    except ValueError as exc:
        hint = " (install it: apt-get install opencv-doc)" if str(tdata.OPENCV_DOC_DIR) in str(exc) else ""
        print(f"teaprint train: {exc}{hint}", file=sys.stderr)
        return 2
    args._procedural = sources.procedural_per_epoch
    if not sources.photos and not sources.procedural_per_epoch:
        print("teaprint train: no training images found", file=sys.stderr)
        return 2
    ckpt_dir = checkpoint_dir(args.out)
    state: dict[str, Any] = {}
    if args.resume and (ckpt_dir / STATE_FILE).is_file():
        state = json.loads((ckpt_dir / STATE_FILE).read_text())
        if state["recipe"] != json.loads(json.dumps(_recipe(args))):
            print(f"teaprint train: --resume: checkpoint {ckpt_dir} was made with other settings", file=sys.stderr)
            return 2
    elif ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    start_epoch = int(state.get("epoch", 0))
    end_epoch = args.epochs if args.stop_after is None else min(args.epochs, start_epoch + args.stop_after)
    pool = _pool(args, sources.photos) if start_epoch < end_epoch else None
    # Submitted before Keras is imported: the workers start while the framework loads.
    pending = submit_epoch(pool, args, sources.photos, start_epoch) if pool is not None else None

    import keras

    from pipeline.training.model import build_encoder, save_encoder

    keras.utils.set_random_seed(args.seed)
    if args.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    model = build_encoder(args.input_size, args.channels, args.embedding_dim, args.width, args.seed)
    total_steps = args.epochs * args.steps
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=max(1, total_steps), alpha=0.05)
    optimizer = keras.optimizers.Adam(schedule)
    optimizer.build(model.trainable_variables)
    model.compile(optimizer=optimizer, loss=make_loss(args.loss, args.temperature, args.margin), jit_compile=False)
    history: list[dict[str, float]] = list(state.get("history", []))
    segments: list[dict[str, Any]] = list(state.get("segments", []))
    prior_seconds = float(state.get("seconds", 0.0))
    if state:
        load_checkpoint(ckpt_dir, model, optimizer)
        print(f"resuming from {ckpt_dir} at epoch {start_epoch + 1}/{args.epochs}", file=sys.stderr)

    t_train = time.time()
    if pool is not None:
        segments.append({"epochs": [start_epoch + 1, start_epoch], "hardware": hardware(), "keras": keras.__version__})
        for epoch in range(start_epoch, end_epoch):
            t_data = time.time()
            assert pending is not None
            x, groups = collect_epoch(pending)
            pending = submit_epoch(pool, args, sources.photos, epoch + 1) if epoch + 1 < end_epoch else None
            wait_s = time.time() - t_data
            fit = model.fit(x, groups, batch_size=2 * args.batch_size, epochs=1, shuffle=False, verbose=0)
            loss = float(fit.history["loss"][-1])
            history.append({"epoch": epoch + 1, "loss": round(loss, 5), "data_wait_s": round(wait_s, 2)})
            segments[-1]["epochs"][1] = epoch + 1  # what this run really did, should it be stopped
            save_checkpoint(ckpt_dir, model, optimizer)
            state = {"epoch": epoch + 1, "history": history, "recipe": _recipe(args), "segments": segments,
                     "seconds": prior_seconds + time.time() - t_train}
            tmp = ckpt_dir / (STATE_FILE + ".tmp")
            tmp.write_text(json.dumps(state, indent=1))
            os.replace(tmp, ckpt_dir / STATE_FILE)
            if not args.quiet:
                print(f"epoch {epoch + 1}/{args.epochs} loss {loss:.4f} data wait {wait_s:.1f}s "
                      f"({time.time() - t_start:.0f}s)", file=sys.stderr, flush=True)
        pool.shutdown()
    train_seconds = prior_seconds + time.time() - t_train
    if end_epoch < args.epochs or args.train_only:
        print(f"stopped after epoch {end_epoch}/{args.epochs}; continue with --resume", file=sys.stderr)
        return 0

    meta: dict[str, Any] = {
        "rotation_pool": args.rotation_pool,
        "disc_mask": bool(args.disc_mask),
        "architecture": {"name": "teaprint-cnn/1", "width": args.width, "params": int(model.count_params())},
        "description": (
            f"teaprint siamese CNN encoder, {args.input_size}px {'grey' if args.channels == 1 else 'RGB'} input, "
            f"{args.embedding_dim}-d unit-norm output, {args.loss} loss on simulated re-photographed views, "
            f"rotation pooling x{args.rotation_pool} at embedding time"
        ),
        "training": {
            "command": training_command(args),
            "data": {"specs": list(args.images), "photos": tdata.iter_names(sources.photos),
                     "procedural_per_epoch": sources.procedural_per_epoch,
                     "held_out_rule": "sha1(family(name)) % 5 == 0 (pipeline.training.data.is_held_out)"},
            "epochs": args.epochs, "steps_per_epoch": args.steps, "batch_size": args.batch_size,
            "loss": args.loss, "seed": args.seed, "history": history,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "train_seconds": round(train_seconds, 1),
            "deterministic": bool(args.deterministic),
            "hardware": segments,
            "keras": keras.__version__,
        },
    }
    save_encoder(model, args.out, meta)
    cal = calibrate(args.out, args)
    meta["threshold"] = cal["threshold"]
    meta["calibration"] = cal
    meta["training"]["duration_seconds"] = round(time.time() - t_start, 1)
    save_encoder(model, args.out, meta)
    # After the last save: the export records the id of the final .keras file.
    from pipeline.training.export import export_encoder

    exported = export_encoder(args.out)
    print(f"exported {exported.path} for serving (min cosine vs Keras {exported.cosine_min:.6f})", file=sys.stderr)
    print(json.dumps({"out": str(args.out), "threshold": cal["threshold"], "final_loss": history[-1]["loss"] if history else None,
                      "train_seconds": round(train_seconds, 1)}), file=sys.stderr)
    return 0


# ------------------------------------------------------------ calibration


def calibrate(model_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Cosine threshold meeting `args.target_far` on held-out generated pairs.

    Objects come from the held-out real photos of `args.images` plus
    `args.calib_procedural` procedural textures drawn with calibration keys; each gives two shots.
    Genuine scores: the two shots of one object. Impostor scores: shots of
    objects from different sources. Embedded through `Encoder.embed`, i.e.
    exactly as served (rotation pooling, disc mask).
    """
    held = tdata.resolve_sources(args.images, split="held_out").photos
    n_proc = args.calib_procedural
    held += tdata.procedural_sources((tdata.CALIBRATION_KEY, args.seed), n_proc)
    rng = np.random.default_rng([args.seed, 99])
    a, b, groups = tdata.make_pair_bank(held, rng, args.calib_objects, max(args.input_size, 128), disc_prob=args.disc_prob)
    enc = Encoder.load(model_path, runtime="keras")  # the export is made after calibration
    ea, eb = enc.embed(list(a)), enc.embed(list(b))
    genuine = np.sum(ea * eb, axis=1)
    sim = ea @ np.concatenate([ea, eb]).T
    g2 = np.concatenate([groups, groups])
    impostor = sim[groups[:, None] != g2[None, :]]
    imp = np.sort(impostor)
    k = int(np.floor(args.target_far * imp.size))
    threshold = float(imp[-k - 1]) + 1e-6 if k < imp.size else float(imp[-1]) + 1e-6
    far = float(np.mean(impostor >= threshold))
    tar = float(np.mean(genuine >= threshold))
    return {
        "target_far": args.target_far,
        "threshold": round(threshold, 6),
        "far": round(far, 5),
        "tar": round(tar, 4),
        "genuine_pairs": int(genuine.size),
        "impostor_pairs": int(impostor.size),
        "genuine_median": round(float(np.median(genuine)), 4),
        "impostor_p99": round(float(np.quantile(impostor, 0.99)), 4),
        "sources": tdata.iter_names(held[: len(held) - n_proc]) + [f"procedural key ({tdata.CALIBRATION_KEY}, {args.seed}) x{n_proc}"],
        "seed": [args.seed, 99],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="teaprint train", description=__doc__.splitlines()[0])
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
