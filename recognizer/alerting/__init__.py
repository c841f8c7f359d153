"""Alerts: the rules (per-station incidents), the monitor fed by the server, the persistent outbox and its sinks."""
