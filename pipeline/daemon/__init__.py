"""The drop-folder daemon (`teaprint run`).

- `events`: the small immutable values the rest of the daemon sees.
- `readiness`: turns filesystem noise into one "file ready" event per file.
- `watcher`: the watchdog observer feeding `readiness`, plus folder scans.
- `journal`: exactly-once answers across crashes.
- `state`: the single-daemon lock and the status file.
- `service`: the loop that indexes catalog photos and answers queries.
"""
