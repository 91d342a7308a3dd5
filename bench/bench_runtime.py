#!/usr/bin/env python3
"""Encoder runtimes compared: Keras/TensorFlow, ONNX Runtime, LiteRT.

    .venv/bin/python bench/bench_runtime.py [--model PATH] [--repeats 30]

The encoder (`pipeline/data/models/teaprint-encoder.keras` by default) is converted to ONNX
(Keras' own `model.export(format="onnx")`, tf2onnx underneath) and to a LiteRT
flatbuffer (`tf.lite.TFLiteConverter.from_keras_model`) in a temp dir. Each
runtime then runs in its own fresh subprocess, which reports:

* import time of the runtime module (a cold `import`, the serving start-up cost);
* load time of the model file;
* model-call latency, median of `--repeats`, at batch 1, 4 (one query with
  rotation pooling x4) and 32 (an indexing batch without pooling);
* RSS after load + warm-up + the timed calls (VmRSS; peak VmHWM);
* its outputs on a held-out set of real photos (scikit-image's and OpenCV's
  held-out sources, `pipeline.training.data.is_held_out`, several crops and
  the 4 pooling rotations each), compared in the parent with Keras': cosine of
  the raw outputs and of the rotation-pooled embeddings (min and mean).

Ratios are against Keras measured in the same run. Last line: one JSON object.
ONNX Runtime and tf2onnx are not project dependencies (LiteRT won): without
them (`.venv/bin/pip install onnxruntime tf2onnx`) that row is left out, said so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ALL_RUNTIMES = ("keras", "onnxruntime", "litert")

CHILD = r"""
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
kind, model, inputs_path, out_path, repeats = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
threads = os.cpu_count() or 1
t0 = time.perf_counter()
import numpy as np
if kind == "keras":
    import keras
elif kind == "onnxruntime":
    import onnxruntime as ort
else:
    from ai_edge_litert.interpreter import Interpreter
t_import = time.perf_counter() - t0
t0 = time.perf_counter()
if kind == "keras":
    m = keras.models.load_model(model, safe_mode=True, compile=False)
    run = lambda x: m(x, training=False).numpy()
elif kind == "onnxruntime":
    so = ort.SessionOptions(); so.intra_op_num_threads = threads
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    run = lambda x: s.run(None, {name: x})[0]
else:
    it = Interpreter(model_path=model, num_threads=threads)
    inp, outp = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    state = {"n": None}
    def run(x):
        if state["n"] != len(x):
            it.resize_tensor_input(inp, list(x.shape)); it.allocate_tensors(); state["n"] = len(x)
        it.set_tensor(inp, x); it.invoke(); return it.get_tensor(outp).copy()
t_load = time.perf_counter() - t0
x = np.load(inputs_path)
shape = x.shape[1:]
lat = {}
for n in (1, 4, 32):
    b = np.ascontiguousarray(x[:n])
    run(b); run(b)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); run(b); ts.append(time.perf_counter() - t)
    lat[n] = sorted(ts)[len(ts) // 2] * 1e3
outs = np.concatenate([run(np.ascontiguousarray(x[i:i + 32])) for i in range(0, len(x), 32)])
np.save(out_path, outs.astype(np.float32))
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
rss = int(status["VmRSS"].split()[0]) / 1024; hwm = int(status["VmHWM"].split()[0]) / 1024
tf_loaded = any(k == "tensorflow" or k.startswith("tensorflow.") for k in sys.modules)
print(json.dumps({"import_s": t_import, "load_s": t_load, "lat_ms": lat, "rss_mb": rss, "hwm_mb": hwm, "tensorflow_imported": tf_loaded}))
"""


def held_out_inputs(size: int, channels: int, pool: int):
    """Encoder inputs (N * pool, S, S, C) from held-out real photos: 4 crops each, every pooling rotation."""
    import numpy as np

    from pipeline.features.embedding import prepare_input, rotations
    from pipeline.training.data import resolve_sources

    specs = ["skimage"] + [d for d in ["/usr/share/doc/opencv-doc/examples/data"] if Path(d).is_dir()]
    photos = resolve_sources(specs, split="held_out").photos
    batch = []
    for src in photos:
        img = src.image
        h, w = img.shape[:2]
        for fy, fx, frac in ((0.5, 0.5, 1.0), (0.3, 0.3, 0.5), (0.7, 0.6, 0.5), (0.5, 0.4, 0.7)):
            side = int(min(h, w) * frac)
            top = int(min(max(fy * h - side / 2, 0), h - side))
            left = int(min(max(fx * w - side / 2, 0), w - side))
            batch.append(prepare_input(img[top : top + side, left : left + side], size, channels))
    stacked = np.stack(batch)
    views = rotations(stacked, pool)  # (pool, N, S, S, C)
    return views.reshape(-1, *stacked.shape[1:]), len(photos), len(batch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "pipeline" / "data" / "models" / "teaprint-encoder.keras")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    import numpy as np

    from pipeline.features.embedding import Encoder, l2_normalise
    from pipeline.training.export import export_litert, export_onnx

    info = Encoder.load(args.model, runtime="keras").info
    pool = max(1, info.rotation_pool)
    print(f"model {args.model} (id {info.model_id}, {info.input_size} px, {info.channels} ch, pool x{pool})")
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        tmpd = Path(tmp)
        inputs, n_photos, n_crops = held_out_inputs(info.input_size, info.channels, pool)
        np.save(tmpd / "inputs.npy", inputs)
        print(f"held-out set: {n_photos} photos, {n_crops} crops, {len(inputs)} model inputs")
        files = {"keras": args.model, "onnxruntime": tmpd / "enc.onnx", "litert": tmpd / "enc.tflite"}
        runtimes = list(ALL_RUNTIMES)
        try:
            import onnxruntime  # noqa: F401
            import tf2onnx  # noqa: F401
        except ImportError:
            print("onnxruntime / tf2onnx not installed: ONNX Runtime left out")
            runtimes.remove("onnxruntime")
        if "onnxruntime" in runtimes:
            t = time.perf_counter()
            export_onnx(args.model, files["onnxruntime"])
            print(f"ONNX export {time.perf_counter() - t:.1f} s, {files['onnxruntime'].stat().st_size / 1e6:.2f} MB")
        t = time.perf_counter()
        export_litert(args.model, files["litert"])
        print(f"LiteRT export {time.perf_counter() - t:.1f} s, {files['litert'].stat().st_size / 1e6:.2f} MB")
        figures: dict[str, dict] = {}
        outputs = {}
        for kind in runtimes:
            out = tmpd / f"{kind}.npy"
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, kind, str(files[kind]), str(tmpd / "inputs.npy"), str(out), str(args.repeats)],
                capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                print(f"{kind}: failed\n{proc.stderr[-2000:]}")
                return 1
            figures[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
            outputs[kind] = np.load(out)
        ref = outputs["keras"]
        n = len(ref) // pool
        ref_pooled = l2_normalise(ref.reshape(pool, n, -1).mean(axis=0))
        for kind in runtimes:
            raw = np.sum(outputs[kind] * ref, axis=1) / (np.linalg.norm(outputs[kind], axis=1) * np.linalg.norm(ref, axis=1))
            pooled = np.sum(l2_normalise(outputs[kind].reshape(pool, n, -1).mean(axis=0)) * ref_pooled, axis=1)
            figures[kind].update(cos_raw_min=float(raw.min()), cos_pooled_min=float(pooled.min()), cos_pooled_mean=float(pooled.mean()),
                                 file_mb=Path(files[kind]).stat().st_size / 1e6)
    k = figures["keras"]
    print(f"\n{'runtime':<12} {'import s':>8} {'load s':>7} {'b1 ms':>7} {'b4 ms':>7} {'b32 ms':>7} {'RSS MB':>7} {'peak MB':>7} "
          f"{'TF?':>4} {'cos min':>8} {'cos pooled min':>14}")
    for kind, f in figures.items():
        lat = {int(a): b for a, b in f["lat_ms"].items()}
        print(f"{kind:<12} {f['import_s']:>8.2f} {f['load_s']:>7.2f} {lat[1]:>7.2f} {lat[4]:>7.2f} {lat[32]:>7.2f} {f['rss_mb']:>7.0f} "
              f"{f['hwm_mb']:>7.0f} {'yes' if f['tensorflow_imported'] else 'no':>4} {f['cos_raw_min']:>8.6f} {f['cos_pooled_min']:>14.6f}")
    print("\nratio to keras (same run; < 1 is better for time and memory)")
    klat = {int(a): b for a, b in k["lat_ms"].items()}
    for kind, f in figures.items():
        if kind == "keras":
            continue
        lat = {int(a): b for a, b in f["lat_ms"].items()}
        print(f"{kind:<12} import {f['import_s'] / k['import_s']:.3f}  b1 {lat[1] / klat[1]:.3f}  b4 {lat[4] / klat[4]:.3f}  "
              f"b32 {lat[32] / klat[32]:.3f}  RSS {f['rss_mb'] / k['rss_mb']:.3f}")
    print(json.dumps({"model_id": info.model_id, "threads": os.cpu_count(), "runtimes": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
