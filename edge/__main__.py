"""`python -m edge` / `facemon-edge`: run the edge until SIGINT or SIGTERM."""
from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Optional, Sequence

from edge.camera import CameraError
from edge.config import ConfigError, load_config, setup_logging
from shared.fsmode import private_umask

log = logging.getLogger("edge")


def main(argv: Optional[Sequence[str]] = None) -> int:
    private_umask()  # the desk's tokens and state: 0600 files in 0700 folders
    try:
        config = load_config(argv, os.environ)
    except ConfigError as exc:
        sys.exit(f"facemon-edge: {exc}")
    setup_logging(config.log_level)
    from edge.runtime import Edge, StateDirError  # after logging is set up: building it opens the camera

    try:
        edge = Edge(config)
    except (CameraError, StateDirError) as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:  # e.g. the web port is taken
        log.error("cannot listen on %s:%d: %s", config.web_host, config.web_port, exc)
        return 2

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        edge.stop_event.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    edge.start()
    log.info("open %s", edge.url)
    try:
        edge.stop_event.wait()
    finally:
        edge.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
