"""Console entry `facemon-recognizer`: read config, build the models and the server, serve until signalled."""
from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
from typing import Optional, Sequence

from recognizer.settings import build_parser
from shared.config import ConfigError, setup_logging
from shared.fsmode import private_umask

log = logging.getLogger("recognizer")

def main(argv: Optional[Sequence[str]] = None) -> int:
    # one BLAS thread per process: matching is a small matrix product per frame, and threaded BLAS on
    # a 2-core box fights the station threads and encoder processes (measured 2.6 ms vs 20-30 ms at 100k)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    private_umask()  # encodings, photos, the outbox: 0600 files in 0700 folders
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["data-key"]:  # facemon-recognizer data-key new|rotate (recognizer/data_key.py)
        from recognizer.data_key import main as data_key_main

        return data_key_main(argv[1:])
    faulthandler.enable()  # a crash inside dlib/OpenCV leaves a Python traceback in the log
    try:
        args = build_parser().parse_args(argv)
        setup_logging(args.log_level)
        from recognizer.app import RecognizerApp, RecognizerSettings

        settings = RecognizerSettings.from_args(args)
        settings.check_exposure()  # shared-token mode on a network address needs saying so
    except ConfigError as exc:
        print(f"facemon-recognizer: configuration error: {exc}", file=sys.stderr)
        return 2
    if not settings.server.token:
        log.warning("no --token set: any client on the network can connect")
    app = RecognizerApp(settings)
    from shared.crypto import DataKeyError

    try:
        app.start()
    except (OSError, RuntimeError, DataKeyError) as exc:
        log.error("cannot start: %s", exc)
        app.stop()
        return 1
    stop = lambda *_: app.request_stop()  # noqa: E731
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    app.wait()
    app.drain()
    app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
