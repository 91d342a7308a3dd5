"""`teaprint` command line: argument parsing and printing around `Engine`.

Exit codes (`pipeline.exits`): 0 success, 2 usage or config error, 1 any
other failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pipeline.config import Config, ConfigError, LoggingConfig, load_config
from pipeline.evaluation.calibrate import add_calibrate_arguments, run_calibrate
from pipeline.evaluation.cli import add_eval_arguments, run_eval
from pipeline.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError
from pipeline.training.train import add_train_arguments, run_train


def main(argv: Sequence[str] | None = None) -> int:
    # File names are data: one that is not UTF-8 is shown with its bytes
    # escaped rather than crashing the output (`--json` escapes it exactly).
    # Output is UTF-8 whatever the locale (a service's is often C): labels
    # and records in Chinese reach JSON and CSV as text, never as escapes.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    from pipeline.logs import configure_logging

    if getattr(args, "raw_config", False):
        # doctor: a broken config is one of its findings, not an exit 2; what the log would
        # warn about is among its findings too, so only errors are logged (on stderr).
        configure_logging(LoggingConfig(level="error", format="auto"))
        return int(args.handler(args, None))
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"teaprint: config error: {err}", file=sys.stderr)
        return EXIT_USAGE

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
    parser.add_argument("--config", type=Path, default=None, help="YAML file overriding the shipped defaults (pipeline/data/default.yaml)")
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

    p = sub.add_parser("history", help="the history of checks: every answered query (newest last)")
    p.add_argument("--label", help="only checks that identified this cake")
    p.add_argument("--since", help="only checks since: 7d, 12h, 30m, 2w ago, or a date/time (2024-05-01, local time)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="one JSON object per line (UTF-8)")
    form.add_argument("--csv", action="store_true", help="CSV with a header row (UTF-8 with a BOM, which Excel needs)")
    p.set_defaults(handler=cmd_history)

    p = sub.add_parser("doctor", help="check this setup and say how to mend what is wrong (exit 1 when something fails)")
    p.add_argument("--no-serve", action="store_true", help="skip what only `teaprint serve` needs (port, token)")
    p.add_argument("--json", action="store_true", help="the findings as one JSON object")
    p.set_defaults(handler=cmd_doctor, raw_config=True)

    p = sub.add_parser("install-service", help="write and enable the systemd unit(s) running this install on --root")
    p.add_argument("--user", action="store_true", help="for your own systemd (systemctl --user), not the system's (needs root)")
    p.add_argument("--serve", action="store_true", help="also a unit running `teaprint serve`")
    p.add_argument("--no-enable", action="store_true", help="only write the units; print the systemctl commands")
    p.set_defaults(handler=cmd_install_service)

    p = sub.add_parser("remove", help="delete catalog entries by id, sha256 prefix or path")
    p.add_argument("keys", nargs="+")
    p.set_defaults(handler=cmd_remove)

    p = sub.add_parser("reembed", help="recompute the catalog's descriptors with the loaded model and feature settings")
    p.set_defaults(handler=cmd_reembed)

    p = sub.add_parser("reindex", help="rebuild the search structures from the HDF5 catalog (vote store; Milvus collection)")
    p.add_argument("--backend", choices=["embedded", "milvus"], default=None,
                   help="milvus: also drop and refill the Milvus collection of search.milvus (default: search.backend)")
    p.set_defaults(handler=cmd_reindex)

    p = sub.add_parser("run", help="the drop-folder daemon (main job)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("serve", help="HTTP API and phone page on the same catalog (see README, HTTP API)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default http.port; 0 picks a free one)")
    p.add_argument("--host", default=None, help="address to bind (default http.host, 127.0.0.1)")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("train", help="train the siamese encoder")
    add_train_arguments(p)
    p.set_defaults(handler=lambda args, config: run_train(args))

    p = sub.add_parser("export", help="export the encoder for serving without TensorFlow (LiteRT file beside the .keras)")
    p.add_argument("model", nargs="?", type=Path, default=None, help="the .keras file (default: model.path)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("eval", help="evaluate on a benchmark folder (see BENCHMARK.md)")
    add_eval_arguments(p)
    p.set_defaults(handler=run_eval)

    p = sub.add_parser("calibrate", help="fit the fused decision and its threshold on held-out benchmarks")
    add_calibrate_arguments(p)
    p.set_defaults(handler=run_calibrate)
    return parser


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    from pipeline.engine import resolve_model_path
    from pipeline.training.export import export_encoder

    model = args.model or resolve_model_path(config, args.root)
    report = export_encoder(model)
    print(json.dumps({"exported": str(report.path), "model_id": report.source_model_id,
                      "cosine_min": round(report.cosine_min, 7), "inputs": report.inputs}))
    return EXIT_OK


def _engine(args: argparse.Namespace, config: Config, check_model: bool = True) -> Any:
    from pipeline.engine import Engine

    return Engine.load(config, args.root, check_model=check_model, component="cli")


def iter_photo_files(paths: Sequence[Path], config: Config) -> Iterator[tuple[Path, Path | None]]:
    """(file, catalog root for labels) for every photo named or found under `paths`.

    A file named on the command line is taken as given; a folder gives its
    photos by `pipeline.photos`' rule, the one the daemon uses.
    """
    from pipeline.photos import photo_files

    for path in paths:
        if path.is_dir():
            yield from ((child, path) for child in photo_files(path, config, recursive=True))
        elif path.exists() or path.is_symlink():
            yield path, None
        else:
            raise UsageError(f"no such file or folder: {path}")


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
    print(f"indexed {added} new, {duplicates} already present, {len(failures)} refused; catalog holds {len(engine.snapshot())}")
    return EXIT_FAILURE if failures and not added and not duplicates else EXIT_OK


def cmd_match(args: argparse.Namespace, config: Config) -> int:
    if args.explain is not None and len(args.images) != 1:
        raise UsageError("--explain takes exactly one IMAGE")
    engine = _engine(args, config)
    worst = EXIT_OK
    for image in args.images:
        result = engine.match_file(image)
        engine.answered(result, "cli")
        if args.explain is not None and result.status != "rejected":
            _explain(engine, config, image, result, args.explain)
        if result.status == "rejected":
            worst = EXIT_FAILURE
        if args.json:
            print(result.to_json(), flush=True)
        else:
            print(_describe(result), flush=True)
    return worst


def _explain(engine: Any, config: Config, image: Path, result: Any, out: Path) -> None:
    from pipeline.explain import render_explanation, write_explanation
    from pipeline.intake import read_photo

    pixels = read_photo(image, config.intake).pixels
    out = out if out.suffix.lower() in (".png", ".jpg", ".jpeg") else out.with_suffix(".png")
    write_explanation(out, render_explanation(pixels, result, engine.snapshot().by_id(), config))


def _describe(result: Any) -> str:
    if result.status == "rejected":
        return f"{result.query}: rejected: {result.error}"
    head = f"{result.query}: {result.status}"
    if result.label is not None:
        head += f" {result.label}"
    lines = [f"{head} (confidence {result.confidence:.3f})"]
    if result.record is not None:
        lines.append("  " + _describe_record(result.record))
    for m in result.matches[:5]:
        lines.append(f"  {m.label:<16} sim {m.similarity:.3f}  lbp {m.lbp_distance:.3f}  {m.image}")
    return "\n".join(lines)


def _describe_record(record: dict[str, Any]) -> str:
    """One line for a result's cake record: name, year, producer, weight, and earlier checks."""
    parts = [str(record[k]) for k in ("display_name", "year", "batch", "producer") if record.get(k) is not None]
    if record.get("weight_g") is not None:
        parts.append(f"{record['weight_g']:g} g")
    checks = record.get("checks")
    if checks:
        parts.append(f"identified {checks['count']} times before" + (f", last {checks['last_at']}" if checks["last_at"] else ""))
    return "record: " + ", ".join(parts)


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    status = _engine(args, config, check_model=False).status()
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    index, model, daemon = status["index"], status["model"], status["daemon"]
    print(f"root      {status['root']}")
    print(f"index     {index['path']} ({index['size_bytes']} bytes, generation {index['generation']})")
    print(f"entries   {status['entries']} photos, {status['labels']} labels")
    print(f"model     {model['id']} threshold {model['threshold']} ({model['threshold_source']}; {model['path']}, {model['runtime']})")
    if not status["model_matches_index"]:
        print(f"WARNING   index built with model {index['model_id']}: run `teaprint reembed`")
    if not status["features_match_index"]:
        print("WARNING   index built with other feature settings (locate, lbp, local): run `teaprint reembed`")
    print(f"daemon    {'running, pid ' + str(daemon['pid']) if daemon['running'] else 'not running'}")
    print(f"pending   {daemon['pending']['catalog']} catalog, {daemon['pending']['query']} query")
    ignored_dirs = (daemon.get("ignored") or {}).get("query_directories")
    if ignored_dirs:
        print(f"ignored   directories in the query folder: {', '.join(ignored_dirs)}")
    if daemon.get("last_error"):
        print(f"last error {daemon['last_error']}")
    records, history = status["records"], status["history"]
    n = records["problem_count"]
    print(f"records   {records['cakes']} cakes with a record, {n} problem{'s' * (n != 1)} in record files")
    for problem in records["problems"][:5]:
        print(f"  {problem['message']}")
    print(f"history   {history['path']}: {'ok' if history['ok'] else 'FAILING: ' + str(history['error'])}, {history['pending']} waiting")
    from pipeline.ops.metrics import summary_lines

    for line in summary_lines(status["metrics"]):
        print(line)
    return EXIT_OK


def cmd_history(args: argparse.Namespace, config: Config) -> int:
    """Read the history straight from its file: no model is loaded to print it."""
    from pipeline.history import Filters, history_at, parse_since, write_csv, write_json_lines

    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as err:
        raise UsageError(f"--since: {err}") from None
    label = unicodedata.normalize("NFC", args.label) if args.label is not None else None
    checks = history_at(args.root, config).checks(Filters(label=label, since=since))
    if args.csv:
        write_csv(checks, sys.stdout, bom=True)
    elif args.json:
        write_json_lines(checks, sys.stdout)
    else:
        for c in checks:
            outcome = f"{c.status} {c.label}" if c.label else c.status
            print(f"{c.at}  {c.source:<6} {outcome}  (confidence {c.confidence:.3f})  {c.query}")
        print(f"{len(checks)} checks", file=sys.stderr)
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace, _: None) -> int:
    from pipeline.ops.doctor import diagnose

    diagnosis = diagnose(args.root, args.config, serve=not args.no_serve)
    print(json.dumps(diagnosis.to_dict(), ensure_ascii=False, indent=1) if args.json else diagnosis.text())
    return diagnosis.exit_code


def cmd_install_service(args: argparse.Namespace, config: Config) -> int:
    from pipeline.ops.install import install_service

    try:
        report = install_service(args.root, user_mode=args.user, serve=args.serve, config=args.config, enable=not args.no_enable)
    except ValueError as err:
        raise UsageError(str(err)) from None
    for line in report.lines():
        print(line)
    return EXIT_OK if report.ok else EXIT_FAILURE


def cmd_remove(args: argparse.Namespace, config: Config) -> int:
    engine = _engine(args, config, check_model=False)
    snapshot = engine.snapshot()
    targets = []
    for key in args.keys:
        found = snapshot.find(key)
        if not found:
            raise UsageError(f"no catalog entry matches {key!r}")
        if len(found) > 1 and not any(e.path == key for e in found):
            raise UsageError(f"{key!r} matches {len(found)} entries; give more of the id")
        targets += found
    removed = engine.remove(targets)
    print(f"removed {len(removed)}; catalog holds {len(engine.snapshot())}")
    return EXIT_OK


def cmd_reembed(args: argparse.Namespace, config: Config) -> int:
    report = _engine(args, config, check_model=False).reembed()
    if report.unreadable:
        for line in report.unreadable:
            print(f"cannot re-embed {line}", file=sys.stderr)
        print(f"{len(report.unreadable)} photos are unreadable; index left unchanged", file=sys.stderr)
        return EXIT_FAILURE
    print(f"re-embedded {report.count} entries with model {report.model_id}")
    return EXIT_OK


def cmd_reindex(args: argparse.Namespace, config: Config) -> int:
    done = _engine(args, config).reindex(args.backend)
    print(json.dumps(done, ensure_ascii=False))
    return EXIT_OK


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from pipeline.daemon.service import run_daemon

    return run_daemon(args.root, config)


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from pipeline.server.run import serve

    return serve(args.root, config, port=args.port, host=args.host)


Handler = Callable[[argparse.Namespace, Config], int]
