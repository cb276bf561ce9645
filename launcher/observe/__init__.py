"""Seeing what the model does: the request log, usage figures, Prometheus metrics and the dashboard.

- `record`: the one small object each proxied request fills (`RequestRecord`) and how its answer is read.
- `store`: the SQLite file under `$ANYCLAUDE_HOME` (WAL, 0600), its schema, queries and retention.
- `recorder`: hands finished records to a background thread that writes them (off the hot path).
- `metrics`: the Prometheus registry of `/metrics`.
- `usage`: totals and percentiles for `anyclaude usage` and the dashboard.
- `web`: `/metrics`, `/ui` and the dashboard's JSON and event-stream endpoints.
- `commands`: the `requests`, `usage` and `dashboard` commands.
"""
