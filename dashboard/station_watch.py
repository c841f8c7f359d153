"""The thread that notices desks gone silent: every `interval_s` it opens `station_offline` incidents
(`dashboard.stations.open_offline_alerts`). One per dashboard process; several processes are safe (ids are
derived, the claim is one conditional UPDATE). It ends with the broker (server shutdown) or when the app is gone."""
from __future__ import annotations

import logging
import threading
import weakref

from dashboard.services import Services
from dashboard.stations import open_offline_alerts

log = logging.getLogger(__name__)


def start(svc: Services, interval_s: float = 1.0) -> threading.Thread | None:
    """Start the watcher for `svc` (None when station_offline is switched off)."""
    if not svc.config.offline_after_s:
        return None
    ref = weakref.ref(svc)
    closed = svc.broker.closed
    thread = threading.Thread(target=_run, args=(ref, closed, interval_s), name="station-watch", daemon=True)
    thread.start()
    return thread


def _run(ref: "weakref.ref[Services]", closed: threading.Event, interval_s: float) -> None:
    failing = False
    while not closed.wait(interval_s):
        svc = ref()
        if svc is None:
            return
        try:
            open_offline_alerts(svc.sessions, svc.writer, svc.station_rules, svc.broker.publish)
        except Exception as exc:  # noqa: BLE001 - a database hiccup must not end the watch
            if not failing:
                log.warning("station watch failed (%s: %s); retrying every %.0f s quietly", type(exc).__name__, exc, interval_s)
            failing = True
        else:
            if failing:
                log.info("station watch works again")
            failing = False
        del svc
