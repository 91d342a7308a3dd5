"""The drop-folder daemon (`teaprint run`).

- `events`: the small immutable values the rest of the daemon sees.
- `readiness`: turns filesystem noise into one "file ready" event per file.
- `watcher`: the watchdog observer feeding `readiness` (which names count: `pipeline.photos`).
- `journal`: exactly-once answers across crashes.
- `service`: the loop that indexes catalog photos and answers queries,
  through `Engine` only (the catalog's writer, snapshots, one status).

The single-daemon lock and the status file live in `pipeline.state`, so
that `teaprint status` and the server read them without this package.
"""
