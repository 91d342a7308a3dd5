"""`teaprint` command line.

Exit codes: 0 success, 2 usage or config error, 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

from pipeline.config import Config, ConfigError, load_config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command used wrongly; exits 2."""


def main(argv: Sequence[str] | None = None) -> int:
    # File names are data: one that is not UTF-8 is shown with its bytes
    # escaped rather than crashing the output (`--json` escapes it exactly).
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"teaprint: config error: {err}", file=sys.stderr)
        return EXIT_USAGE
    from pipeline.logs import configure_logging

    configure_logging(config.logging)
    try:
        return int(args.handler(args, config))
    except (UsageError, ConfigError) as err:
        print(f"teaprint: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("teaprint: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as err:  # the one place a failure becomes a message, not a traceback
        print(f"teaprint: error: {err}", file=sys.stderr)
        return EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teaprint", description="Identify individual tea cakes from photos.")
    parser.add_argument("--config", type=Path, default=None, help="YAML file overriding config/default.yaml")
    parser.add_argument("--root", type=Path, default=Path("."), help="folder holding inbox/, outbox/ and the index (default: .)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="register photos (files or folders) in the catalog")
    p.add_argument("paths", nargs="+", type=Path)
    p.set_defaults(handler=cmd_index)

    p = sub.add_parser("match", help="identify photos")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--json", action="store_true", help="one result object per line")
    p.add_argument("--explain", type=Path, metavar="OUT", help="draw the query beside its best matches with inlier lines (one IMAGE only)")
    p.set_defaults(handler=cmd_match)

    p = sub.add_parser("status", help="catalog, model and daemon state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("remove", help="delete catalog entries by id, sha256 prefix or path")
    p.add_argument("keys", nargs="+")
    p.set_defaults(handler=cmd_remove)

    p = sub.add_parser("reembed", help="recompute the catalog's descriptors with the loaded model and feature settings")
    p.set_defaults(handler=cmd_reembed)

    p = sub.add_parser("run", help="the drop-folder daemon (main job)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("serve", help="HTTP API and phone page on the same catalog (see README, HTTP API)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default http.port; 0 picks a free one)")
    p.add_argument("--host", default=None, help="address to bind (default http.host, 127.0.0.1)")
    p.set_defaults(handler=cmd_serve)

    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub: argparse._SubParsersAction) -> None:
    """Commands whose modules import TensorFlow-heavy code only when run."""
    try:
        from pipeline.training.train import add_train_arguments, run_train
    except ImportError:
        pass
    else:
        p = sub.add_parser("train", help="train the siamese encoder")
        add_train_arguments(p)
        p.set_defaults(handler=lambda args, config: run_train(args))
        p = sub.add_parser("export", help="export the encoder for serving without TensorFlow (LiteRT file beside the .keras)")
        p.add_argument("model", nargs="?", type=Path, default=None, help="the .keras file (default: model.path)")
        p.set_defaults(handler=cmd_export)

    try:
        from pipeline.evaluation.cli import add_eval_arguments, run_eval
    except ImportError:
        return
    p = sub.add_parser("eval", help="evaluate on a benchmark folder (see BENCHMARK.md)")
    add_eval_arguments(p)
    p.set_defaults(handler=run_eval)

    from pipeline.evaluation.calibrate import add_calibrate_arguments, run_calibrate

    p = sub.add_parser("calibrate", help="fit the fused decision and its threshold on held-out benchmarks")
    add_calibrate_arguments(p)
    p.set_defaults(handler=run_calibrate)


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    from pipeline.engine import resolve_model_path
    from pipeline.training.export import export_encoder

    model = args.model or resolve_model_path(config, args.root)
    report = export_encoder(model)
    print(json.dumps({"exported": str(report.path), "model_id": report.source_model_id,
                      "cosine_min": round(report.cosine_min, 7), "inputs": report.inputs}))
    return EXIT_OK


def _engine(args: argparse.Namespace, config: Config, check_model: bool = True):
    from pipeline.engine import Engine

    return Engine.load(config, args.root, check_model=check_model)


def iter_photo_files(paths: Sequence[Path], config: Config) -> Iterator[tuple[Path, Path | None]]:
    """(file, catalog root for labels) for every candidate photo under `paths`.

    In a folder, every entry with a photo's name that is not a directory is
    yielded (a FIFO, a link, a device too): each gets an answer, and the safe
    open refuses what is not a regular file inside the folder.
    """
    from pipeline.intake import is_candidate

    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if is_candidate(child, config.intake) and not child.name.startswith(".") and not _is_real_dir(child):
                    yield child, path
        elif path.exists() or path.is_symlink():
            yield path, None
        else:
            raise UsageError(f"no such file or folder: {path}")


def _is_real_dir(path: Path) -> bool:
    """A directory, not a link to one (a folder named `x.jpg` is walked into, not read)."""
    return path.is_dir() and not path.is_symlink()


def cmd_index(args: argparse.Namespace, config: Config) -> int:
    from tqdm import tqdm

    files = list(iter_photo_files(args.paths, config))
    engine = _engine(args, config)
    added = duplicates = 0
    failures: list[tuple[str, str]] = []
    with tqdm(total=len(files), unit="img", disable=None if len(files) > 20 else True, file=sys.stderr) as bar:
        # Group by catalog root so that subfolder labels resolve against the folder given.
        for root in dict.fromkeys(r for _, r in files):
            group = [f for f, r in files if r == root]
            # Files found in a folder may not lead out of it; files named on the command line may.
            report = engine.index_files(group, catalog_root=root, progress=bar.update, root=root)
            added += len(report.added)
            duplicates += len(report.duplicates)
            failures += [(p, reason) for p, _, reason in report.failed]
    for path, reason in failures:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"indexed {added} new, {duplicates} already present, {len(failures)} refused; catalog holds {len(engine.catalog)}")
    return EXIT_FAILURE if failures and not added and not duplicates else EXIT_OK


def cmd_match(args: argparse.Namespace, config: Config) -> int:
    if args.explain is not None and len(args.images) != 1:
        raise UsageError("--explain takes exactly one IMAGE")
    engine = _engine(args, config)
    worst = EXIT_OK
    for image in args.images:
        result = engine.match_file(image)
        if args.explain is not None and result.status != "rejected":
            _explain(engine, image, result, args.explain)
        if result.status == "rejected":
            worst = EXIT_FAILURE
        if args.json:
            print(result.to_json(), flush=True)
        else:
            print(_describe(result), flush=True)
    return worst


def _explain(engine, image: Path, result, out: Path) -> None:
    import cv2

    from pipeline.explain import render_explanation
    from pipeline.intake import read_photo

    pixels = read_photo(image, engine.config.intake).pixels
    entries = {e.id: e for e in engine.catalog.entries()}
    out = out if out.suffix.lower() in (".png", ".jpg", ".jpeg") else out.with_suffix(".png")
    ok, buf = cv2.imencode(out.suffix, render_explanation(pixels, result, entries, engine.config))
    if not ok:
        raise RuntimeError(f"cannot encode {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.tobytes())


def _describe(result) -> str:
    if result.status == "rejected":
        return f"{result.query}: rejected: {result.error}"
    head = f"{result.query}: {result.status}"
    if result.label is not None:
        head += f" {result.label}"
    lines = [f"{head} (confidence {result.confidence:.3f})"]
    for m in result.matches[:5]:
        lines.append(f"  {m.label:<16} sim {m.similarity:.3f}  lbp {m.lbp_distance:.3f}  {m.image}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    from pipeline.catalog import CatalogIndex
    from pipeline.engine import resolve_model_path
    from pipeline.features.embedding import file_model_id, metadata_path
    from pipeline.prepare import feature_settings

    root = args.root.resolve()
    index_dir = root / config.paths.index
    catalog = CatalogIndex(index_dir)
    model_path = resolve_model_path(config, root)
    model: dict[str, object] = {"path": str(model_path), "exists": model_path.is_file()}
    if model_path.is_file():
        model["id"] = file_model_id(model_path)
        try:
            model["threshold"] = json.loads(metadata_path(model_path).read_text()).get("threshold")
        except (OSError, ValueError):
            model["threshold"] = None
    labels = catalog.labels()
    status = {
        "root": str(root),
        "index": {"path": str(index_dir), "size_bytes": catalog.size_bytes(), "model_id": catalog.index_model_id},
        "entries": len(catalog),
        "labels": len(set(labels)),
        "model": model,
        "model_matches_index": catalog.index_model_id in (None, model.get("id")),
        "features_match_index": not len(catalog) or catalog.index_features == feature_settings(config),
        "daemon": _daemon_status(root, config),
    }
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    print(f"root      {status['root']}")
    print(f"index     {index_dir} ({status['index']['size_bytes']} bytes)")
    print(f"entries   {status['entries']} photos, {status['labels']} labels")
    print(f"model     {model.get('id', 'missing')} threshold {model.get('threshold')} ({model_path})")
    if not status["model_matches_index"]:
        print(f"WARNING   index built with model {catalog.index_model_id}: run `teaprint reembed`")
    if not status["features_match_index"]:
        print("WARNING   index built with other feature settings (locate, lbp, local): run `teaprint reembed`")
    daemon = status["daemon"]
    print(f"daemon    {'running, pid ' + str(daemon['pid']) if daemon['running'] else 'not running'}")
    print(f"pending   {daemon['pending']['catalog']} catalog, {daemon['pending']['query']} query")
    ignored_dirs = (daemon.get("ignored") or {}).get("query_directories")
    if ignored_dirs:
        print(f"ignored   directories in the query folder: {', '.join(ignored_dirs)}")
    if daemon.get("last_error"):
        print(f"last error {daemon['last_error']}")
    return EXIT_OK


def _daemon_status(root: Path, config: Config) -> dict[str, object]:
    try:
        from pipeline.daemon.state import daemon_status
    except ImportError:
        return {"running": False, "pid": None, "pending": {"catalog": 0, "query": 0}, "last_error": None}
    return daemon_status(root, config)


def cmd_remove(args: argparse.Namespace, config: Config) -> int:
    from pipeline.catalog import CatalogIndex

    catalog = CatalogIndex(args.root.resolve() / config.paths.index)
    targets: list[str] = []
    for key in args.keys:
        found = catalog.find(key)
        if not found:
            raise UsageError(f"no catalog entry matches {key!r}")
        if len(found) > 1 and not any(e.path == key for e in found):
            raise UsageError(f"{key!r} matches {len(found)} entries; give more of the id")
        targets += [e.sha256 for e in found]
    result = catalog.commit(removes=targets)
    print(f"removed {len(result.removed)}; catalog holds {len(catalog)}")
    return EXIT_OK


def cmd_reembed(args: argparse.Namespace, config: Config) -> int:
    from pipeline.catalog import NewEntry
    from pipeline.intake import IntakeError
    from pipeline.prepare import feature_settings

    engine = _engine(args, config, check_model=False)
    catalog = engine.catalog
    catalog.refresh_unchecked()
    entries = catalog.entries()
    readable = []
    missing: list[str] = []
    for entry in entries:
        try:
            readable.append((entry, engine.prepare(Path(entry.path), for_catalog=True)))
        except IntakeError as err:
            missing.append(f"{entry.path}: {err}")
    vectors = engine.embed([prepared for _, prepared in readable])
    kept = [
        NewEntry(entry.sha256, entry.path, entry.label, vector, prepared.lbp, prepared.local)
        for (entry, prepared), vector in zip(readable, vectors)
    ]
    if missing:
        for line in missing:
            print(f"cannot re-embed {line}", file=sys.stderr)
        print(f"{len(missing)} photos are unreadable; index left unchanged", file=sys.stderr)
        return EXIT_FAILURE
    catalog.replace_all(kept, engine.encoder.info.model_id, feature_settings(config))
    print(f"re-embedded {len(kept)} entries with model {engine.encoder.info.model_id} and the configured feature settings")
    return EXIT_OK


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    try:
        from pipeline.daemon.service import run_daemon
    except ImportError:
        print("the drop-folder daemon is not built yet; showing status instead", file=sys.stderr)
        return cmd_status(argparse.Namespace(root=args.root, json=False), config)
    return run_daemon(args.root, config)


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from pipeline.server.run import serve

    return serve(args.root, config, port=args.port, host=args.host)


Handler = Callable[[argparse.Namespace, Config], int]
