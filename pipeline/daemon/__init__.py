"""The drop-folder daemon (`teaprint run`): two lanes, so queries never wait behind catalog work.

- `events`: the small immutable values the rest of the daemon sees.
- `readiness`: turns filesystem noise into one "file ready" event per file.
- `watcher`: the watchdog observer feeding `readiness` (which names count: `pipeline.photos`).
- `scheduler`: the catalog lane's next move, a pure function (collect, submit, commit, publish, wait).
- `pool`: the worker processes that decode catalog photos (crashes and hangs cost one file).
- `catalog_sync`: the catalog lane: folder events -> `Engine` writer calls, published snapshots.
- `answerer`: the query lane's work: one answer per query, exactly once (`journal`), and the
  `published` hook observers hang on.
- `folders`, `status`, `budget`: the drop folders and moving aside, the status file, one file's time budget.
- `service`: wires them to the observer, the threads and the signals.

The single-daemon lock and the status file live in `pipeline.state`, so
that `teaprint status` and the server read them without this package.
"""
