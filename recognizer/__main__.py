"""Console entry `facemon-recognizer`: read config, build the models and the server, serve until signalled."""
from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
from typing import Optional, Sequence

from shared.config import ConfigError, SettingsParser, parse_bool, setup_logging

log = logging.getLogger("recognizer")
ENV_PREFIX = "FACEMON_RECOGNIZER_"


def build_parser(prog: str = "facemon-recognizer", description: str = "") -> SettingsParser:
    """Every flag, also settable by FACEMON_RECOGNIZER_<FLAG>; `parse_args` resolves flag > variable > default."""
    p = SettingsParser(
        prog=prog, env_prefix=ENV_PREFIX,
        description=description or "Face recognizer server: edges stream JPEG frames over TCP; it answers with "
        "annotated frames and per-face results. Every flag can also be set by the environment variable shown.",
    )
    a = p.add_setting
    a("--host", "0.0.0.0", "address to listen on")
    a("--port", 8002, "TCP port for edges", int)
    a("--token", "", "shared secret every edge must present (empty: accept any, for a closed lab network only)")
    a("--index", "encodings", "folder of the face index (index.npz + index.json)")
    a("--known-faces", "known_faces", "folder where captured enrolment photos are kept (<name>/*.jpg)")
    a("--detector", "hog+cnn", "face detector: hog+cnn (default: HOG every frame plus periodic "
      "CNN sweeps in a background process that find turned and small faces; CPU), hog (frontal faces only), or cnn (dlib's CNN every frame; "
      "needs a CUDA build of dlib, see docs/gpu.md)")
    a("--sweep-period", 2.5, "hog+cnn: seconds between CNN sweeps of a station (1 s while HOG sees nobody or lost a face)",
      float)
    a("--sweep-budget", 0.25, "hog+cnn: most of one CPU core that the sweeps of all stations together may use (0..1)",
      float)
    a("--sweep-scale", 1.0, "hog+cnn: sweep on the frame resized by this factor (0.25..1; 1 finds the smallest faces)",
      float)
    a("--upsample", 0, "times to upsample before detecting (finds smaller faces; each step ~4x slower)", int)
    a("--downscale", 1.0, "detect on the frame resized by this factor (0.25..1; e.g. 0.5 = half size)", float)
    a("--full-detect-every", 10, "frames between full-frame detections while every face is followed; between them "
      "HOG searches only around each face, and a full pass also runs when something moves elsewhere or a face is "
      "lost (1: the whole frame every frame)", int)
    a("--tolerance", 0.6, "vote radius: enrolled encodings within this distance vote (lower is stricter)", float)
    a("--accept-distance", 0.58, "a face is named only this close to a person (their nearest photo or mean; "
      "facemon-calibrate recommends a value for a site)", float)
    a("--margin", 0.10, "the second-nearest person must be this much farther than the nearest", float)
    a("--min-votes", 2, "enrolled photos within --tolerance the named person needs (capped at their count)", int)
    a("--workers", 0, "encoder processes (0 = one per CPU core)", int)
    a("--max-stations", 32, "most stations served at once", int)
    a("--max-in-flight", 2, "frames an edge may have outstanding", int)
    a("--station-fps", 15.0, "frames/s each station is planned for (blink liveness needs ~10): the recognizer "
      "tells every edge its fair share of the measured capacity, up to --max-station-fps, and warns when that "
      "share falls below this", float)
    a("--max-station-fps", 30.0, "the most frames/s any station is told it may send", float)
    a("--liveness", True, "blink liveness per face (eye aspect ratio and/or the eye-state CNN)", parse_bool)
    a("--liveness-method", "both", "ear, cnn or both (a blink counts when both see it)")
    a("--first-blink-timeout", 30.0, "seconds a new face may go without a first blink before it is a possible spoof "
      "(a photo held up is flagged after this plus --no-blink-after)", float)
    a("--blink-timeout", 60.0, "seconds without a blink, after the first, before a possible spoof (people reading "
      "blink only a few times a minute)", float)
    a("--dashboard-url", "", "dashboard base URL for alerts and station status, e.g. http://127.0.0.1:5000 (empty: alerts are only logged)")
    a("--dashboard-token", "", "station or service token for the dashboard (python -m dashboard add-station)")
    a("--station-auth", "", "shared: the shared --token admits any station id (closed lab); dashboard: each edge "
      "proves its station id with that station's own token, checked by the dashboard (default: dashboard when "
      "--dashboard-url is set, else shared)")
    a("--enrol-policy", "grant", "grant: ENROL needs a single-use grant the dashboard issued to a signed-in admin; "
      "open: any connected client may enrol any face (closed lab / demo only; logged loudly)")
    a("--credential-grace", 300.0, "seconds a station credential the dashboard confirmed is still accepted while "
      "the dashboard is unreachable (0: refuse every claim then)", float)
    a("--outbox", "var/outbox.sqlite3", "SQLite file where alerts wait until delivered")
    a("--webhook-url", "", "also POST every alert event as JSON to this URL")
    a("--webhook-images", False, "include the evidence JPEGs as base64 in webhook posts", parse_bool)
    a("--alert-types", "all", "alert types to raise: all, or a comma-separated list of unknown_face, wrong_person, "
      "multiple_faces, no_face, no_blink, eyes_closed, camera_tamper")
    a("--unknown-after", 3.0, "seconds an unknown (or wrong) face must stay before its alert opens", float)
    a("--multiple-after", 5.0, "seconds more than one face must stay before a multiple_faces alert", float)
    a("--no-face-after", 30.0, "seconds the desk may be empty before a no_face alert", float)
    a("--no-blink-after", 5.0, "seconds liveness must keep saying no_blink before a no_blink alert", float)
    a("--eyes-closed-after", 10.0, "seconds liveness must keep saying eyes_closed (closed over 2 s) before an eyes_closed alert", float)
    a("--cooldown", 60.0, "seconds after an alert closes before the same type opens again on that station", float)
    a("--log-level", "INFO", "DEBUG, INFO, WARNING or ERROR")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    # one BLAS thread per process: matching is a small matrix product per frame, and threaded BLAS on
    # a 2-core box fights the station threads and encoder processes (measured 2.6 ms vs 20-30 ms at 100k)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    faulthandler.enable()  # a crash inside dlib/OpenCV leaves a Python traceback in the log
    try:
        args = build_parser().parse_args(argv)
        setup_logging(args.log_level)
        from recognizer.app import RecognizerApp, RecognizerSettings

        settings = RecognizerSettings.from_args(args)
    except ConfigError as exc:
        print(f"facemon-recognizer: configuration error: {exc}", file=sys.stderr)
        return 2
    if not settings.server.token:
        log.warning("no --token set: any client on the network can connect")
    app = RecognizerApp(settings)
    try:
        app.start()
    except (OSError, RuntimeError) as exc:
        log.error("cannot start: %s", exc)
        app.stop()
        return 1
    stop = lambda *_: app.request_stop()  # noqa: E731
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    app.wait()
    app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
