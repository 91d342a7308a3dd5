"""`teaprint train`: train the siamese encoder on re-photographed views.

Positive pair = two simulated phone shots of the same object (a region of a
source photo, bare or cut out as a disc and laid on a table); negatives = the
other objects of the batch (NT-Xent, in-batch negatives) or the hardest one
(batch-hard triplet). Each epoch draws a fresh bank of views from a generator
seeded by ``(seed, epoch)``, so an epoch's data does not depend on whether the
run was resumed, and the same --seed gives the same model.

Run it with ``python -m pipeline.training.train --images ...`` until the CLI
wires `add_train_arguments` / `run_train`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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
    r.add_argument("--quiet", action="store_true", help="no progress bar")


# ------------------------------------------------------------------ losses


def _losses() -> dict[str, Any]:
    import tensorflow as tf

    def ntxent(za: Any, zb: Any, groups: Any, temperature: float, margin: float) -> Any:
        z = tf.concat([za, zb], axis=0)
        n = tf.shape(za)[0]
        g = tf.concat([groups, groups], axis=0)
        sim = tf.matmul(z, z, transpose_b=True) / temperature
        idx = tf.range(2 * n)
        pos = tf.concat([idx[n:], idx[:n]], axis=0)
        same_group = tf.equal(g[:, None], g[None, :])
        is_pos = tf.one_hot(pos, 2 * n, on_value=True, off_value=False)
        # mask self and same-group non-positives (not true negatives)
        mask = tf.logical_and(same_group, tf.logical_not(is_pos))
        sim = tf.where(mask, tf.constant(-1e9, sim.dtype), sim)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=pos, logits=sim))

    def triplet(za: Any, zb: Any, groups: Any, temperature: float, margin: float) -> Any:
        # batch-hard: for each anchor in a, its b view vs the closest other-group view in a or b
        pos = tf.reduce_sum(za * zb, axis=1)
        cand = tf.concat([za, zb], axis=0)
        sim = tf.matmul(za, cand, transpose_b=True)
        g2 = tf.concat([groups, groups], axis=0)
        other = tf.not_equal(groups[:, None], g2[None, :])
        hardest = tf.reduce_max(tf.where(other, sim, tf.constant(-2.0, sim.dtype)), axis=1)
        return tf.reduce_mean(tf.nn.relu(hardest - pos + margin))

    return {"ntxent": ntxent, "triplet": triplet}


# ------------------------------------------------------------------- data


def _prepare(views: np.ndarray, size: int, channels: int, disc_mask: bool) -> np.ndarray:
    return np.stack([prepare_input(v, size, channels, disc_mask) for v in views])


def epoch_bank(args: argparse.Namespace, photos: list[tdata.Source], epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The views of one epoch: deterministic in (seed, epoch) only.

    Returns
    -------
    a, b : ndarray, shape (steps * batch, S, S, C), dtype float32 (0-255)
    groups : ndarray, shape (steps * batch,), dtype int32
    """
    sources = list(photos)
    n_proc = args._procedural
    if n_proc:
        sources += tdata.procedural_sources((tdata.TRAIN_KEY, args.seed, epoch), n_proc)
    rng = np.random.default_rng([args.seed, epoch, 7])
    a, b, groups = tdata.make_pair_bank(sources, rng, args.steps * args.batch_size, args.input_size, disc_prob=args.disc_prob)
    pa = _prepare(a, args.input_size, args.channels, args.disc_mask)
    pb = _prepare(b, args.input_size, args.channels, args.disc_mask)
    return pa, pb, groups.astype(np.int32)


# ------------------------------------------------------------ checkpoint


def checkpoint_dir(out: Path) -> Path:
    """Where the per-epoch checkpoint of a run writing `out` lives."""
    out = Path(out)
    return out.with_name(out.stem + ".ckpt")


_RECIPE_KEYS = ("images", "steps", "batch_size", "disc_prob", "input_size", "channels", "width", "embedding_dim",
                "loss", "temperature", "margin", "lr", "seed", "disc_mask")


def _recipe(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _RECIPE_KEYS}


# ------------------------------------------------------------------ train


def training_command(args: argparse.Namespace) -> str:
    """The `teaprint train` command line that reproduces this run (no --resume)."""
    defaults = argparse.ArgumentParser()
    add_train_arguments(defaults)
    parts = ["teaprint", "train"]
    for action in defaults._actions:  # noqa: SLF001 - argparse has no public listing
        dest = action.dest
        if dest in ("help", "resume", "quiet", "stop_after") or not action.option_strings:
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
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    from pipeline.training.model import build_encoder, save_encoder

    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
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

    model = build_encoder(args.input_size, args.channels, args.embedding_dim, args.width, args.seed)
    total_steps = args.epochs * args.steps
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=max(1, total_steps), alpha=0.05)
    optimizer = keras.optimizers.Adam(schedule)
    optimizer.build(model.trainable_variables)
    loss_fn = _losses()[args.loss]
    ckpt_dir = checkpoint_dir(args.out)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    history: list[dict[str, float]] = []
    start_epoch = 0
    prior_seconds = 0.0
    if args.resume and (ckpt_dir / STATE_FILE).is_file():
        state = json.loads((ckpt_dir / STATE_FILE).read_text())
        if state["recipe"] != json.loads(json.dumps(_recipe(args))):
            print(f"teaprint train: --resume: checkpoint {ckpt_dir} was made with other settings", file=sys.stderr)
            return 2
        ckpt.read(str(ckpt_dir / "ckpt")).assert_existing_objects_matched()
        start_epoch, history, prior_seconds = state["epoch"], state["history"], state["seconds"]
        print(f"resuming from {ckpt_dir} at epoch {start_epoch + 1}/{args.epochs}", file=sys.stderr)
    elif ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)

    @tf.function(reduce_retracing=True, autograph=False)
    def step(xa: Any, xb: Any, groups: Any) -> Any:
        with tf.GradientTape() as tape:
            z = model(tf.concat([xa, xb], axis=0), training=True)
            za, zb = tf.split(z, 2, axis=0)
            loss = loss_fn(za, zb, groups, args.temperature, args.margin)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    t_train = time.time()
    pool = ThreadPoolExecutor(max_workers=1)
    pending = pool.submit(epoch_bank, args, sources.photos, start_epoch) if start_epoch < args.epochs else None
    end_epoch = args.epochs if args.stop_after is None else min(args.epochs, start_epoch + args.stop_after)
    for epoch in range(start_epoch, end_epoch):
        assert pending is not None
        t_data = time.time()
        xa, xb, groups = pending.result()
        wait_s = time.time() - t_data
        pending = pool.submit(epoch_bank, args, sources.photos, epoch + 1) if epoch + 1 < end_epoch else None
        bs = args.batch_size
        losses = []
        bar = tqdm(range(args.steps), desc=f"epoch {epoch + 1}/{args.epochs}", disable=args.quiet, leave=True, file=sys.stderr)
        for i in bar:
            sl = slice(i * bs, (i + 1) * bs)
            loss = float(step(tf.constant(xa[sl]), tf.constant(xb[sl]), tf.constant(groups[sl])))
            losses.append(loss)
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        bar.close()
        history.append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5), "data_wait_s": round(wait_s, 2)})
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        ckpt.write(str(ckpt_dir / "ckpt"))
        state = {"epoch": epoch + 1, "history": history, "recipe": _recipe(args),
                 "seconds": prior_seconds + time.time() - t_train}
        tmp = ckpt_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, ckpt_dir / STATE_FILE)
    pool.shutdown()
    train_seconds = prior_seconds + time.time() - t_train
    if end_epoch < args.epochs:
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
            "tensorflow": tf.__version__, "keras": keras.__version__,
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
