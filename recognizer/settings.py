"""Every setting of the recognizer (`facemon-recognizer`, `facemon-replay`, the sign-in check), each declared once.

A `Setting` gives its flag, default, help, type, bounds and the field of `RecognizerSettings` it sets
(`into`, "section.field": the section is a part's own typed config, e.g. `match` is
`recognizer.identity.match.OpenSetParams`). The parser, `--help`, the environment variables
(`FACEMON_RECOGNIZER_<FLAG>`) and the checks are generated from this table; `RecognizerSettings.from_args`
(`recognizer/app.py`) fills the sections from it. A part's own config class keeps a default only when it equals the
setting's (tests/test_settings.py checks each one), and checks the bounds declared here with `check_section`
rather than restating them (bounds written once).

Pure data: importing this module loads no model and no part of the recognizer (so `--help` is quick); it is the
recognizer's lowest layer (README, "`recognizer/` layers"), so every part may read its declarations.
"""
from __future__ import annotations

from typing import Optional

from shared.config import Setting, SettingsParser, parse_bool

ENV_PREFIX = "FACEMON_RECOGNIZER_"
DETECTORS = ("hog", "hog+cnn", "cnn")  # recognizer.vision.detect.DETECTORS is this
LIVENESS_METHODS = ("ear", "cnn", "both")  # recognizer.liveness.blinks.METHODS is this
DESCRIPTION = ("Face recognizer server: edges stream JPEG frames over TCP; it answers with annotated frames and "
               "per-face results. Every flag can also be set by the environment variable shown.")
S = Setting

SETTINGS: tuple[Setting, ...] = (
    S("--host", "0.0.0.0", "address to listen on", into="server.host"),
    S("--port", 8002, "TCP port for edges", int, ge=0, le=65535, into="server.port"),
    S("--token", "", "shared secret every edge must present (empty: accept any, for a closed lab network only)",
      into="server.token"),
    S("--index", "encodings", "folder of the face index (index.npz + index.json)", into="index_dir"),
    S("--known-faces", "known_faces", "folder where captured enrolment photos are kept (<name>/*.jpg)",
      into="known_faces"),
    S("--detector", "hog+cnn", "face detector: hog+cnn (HOG every frame plus periodic "
      "CNN sweeps in a background process that find turned and small faces; CPU), hog (frontal faces only), or cnn "
      "(dlib's CNN every frame; needs a CUDA build of dlib, see docs/gpu.md)", choices=DETECTORS,
      into="engine.detector"),
    S("--sweep-period", 2.5, "hog+cnn: seconds between CNN sweeps of a station (1 s while HOG sees nobody or lost a "
      "face)", float, gt=0, le=3600, into="sweep.period_s"),
    S("--sweep-budget", 0.25, "hog+cnn: most of one CPU core that the sweeps of all stations together may use (0..1)",
      float, gt=0, le=1, into="sweep.budget"),
    S("--sweep-scale", 1.0, "hog+cnn: sweep on the frame resized by this factor (0.25..1; 1 finds the smallest faces)",
      float, ge=0.25, le=1, into="sweep.scale"),
    S("--upsample", 0, "times to upsample before detecting (finds smaller faces; each step ~4x slower)", int,
      ge=0, le=3, into="engine.upsample"),
    S("--downscale", 1.0, "detect on the frame resized by this factor (0.25..1; e.g. 0.5 = half size)", float,
      ge=0.25, le=1, into="pipeline.detect_scale"),
    S("--full-detect-every", 10, "frames between full-frame detections while every face is followed; between them "
      "HOG searches only around each face and where something moved, and a full pass also runs when a face is lost "
      "(1: the whole frame every frame; recognizer/vision/regions.py)", int, ge=1, le=1000),
      # -> pipeline.regions (RegionParams.full_every)
    S("--full-detect-every-max", 40, "the most frames between full-frame detections: while the scene stays the same "
      "(each full pass finds just the faces already followed) the interval doubles from --full-detect-every up to "
      "this; a lost or new face brings it back", int, ge=1, le=1000),
      # -> pipeline.regions (RegionParams.full_every_max)
    S("--search-every", 3, "with liveness on, frames between HOG searches around a face followed by its 68 landmarks "
      "(computed for liveness anyway); sooner when its landmarks' box moves or looks implausible (1: HOG around every "
      "face every frame; recognizer/vision/follow.py)", int, ge=1, le=30),
      # -> pipeline.regions (RegionParams.search_every)
    S("--tolerance", 0.6, "vote radius: enrolled encodings within this distance vote (lower is stricter)", float,
      gt=0, le=2, into="match.tolerance"),
    S("--accept-distance", 0.58, "a face is named only this close to a person (their nearest photo or mean; "
      "facemon-calibrate recommends a value for a site)", float, gt=0, le=2, into="match.accept_distance"),
    S("--margin", 0.10, "the second-nearest person must be this much farther than the nearest", float, ge=0, le=1,
      into="match.margin"),
    S("--min-votes", 2, "enrolled photos within --tolerance the named person needs (capped at their count)", int,
      ge=1, into="match.min_votes"),
    S("--person-slack", 0.0, "per-person acceptance: --accept-distance moves by each person's enrolled spread by at "
      "most this much (0..0.2; 0 = off; facemon-calibrate may recommend it)", float, ge=0, le=0.2,
      into="match.person_slack"),
    S("--workers", 0, "encoder processes (0 = one per CPU core)", int, ge=0, le=256, into="workers"),
    S("--max-stations", 32, "most stations served at once", int, ge=1, into="server.max_stations"),
    S("--max-stations-per-address", 8, "stations admitted without their own credential (--station-auth shared) from "
      "one network address at most, so made-up station ids cannot fill every slot (0: no limit)", int, ge=0, le=4096,
      into="server.max_stations_per_address"),
    S("--allow-shared-token-on-network", False, "let --station-auth shared listen on a non-loopback --host (closed "
      "lab network only: anyone with the shared token can claim any desk)", parse_bool,
      into="trust.allow_shared_on_network"),
    S("--max-in-flight", 2, "frames an edge may have outstanding", int, ge=1, into="server.max_in_flight"),
    S("--station-fps", 15.0, "frames/s each station is planned for (blink liveness needs ~10): the recognizer tells "
      "every edge its fair share of the measured capacity, up to --max-station-fps, and warns when that share falls "
      "below this (recognizer/server/pacing.py)", float, ge=1, le=240, into="server.station_fps"),
    S("--max-station-fps", 30.0, "the most frames/s any station is told it may send", float, ge=1, le=240,
      into="server.max_station_fps"),
    S("--liveness", True, "blink liveness per face (eye aspect ratio and/or the eye-state CNN)", parse_bool,
      into="pipeline.liveness"),
    S("--liveness-method", "both", "ear, cnn or both (a blink counts when both see it)", choices=LIVENESS_METHODS,
      into="liveness_method"),
    S("--first-blink-timeout", 30.0, "seconds a new face may go without a first blink before it is a possible spoof "
      "(a photo held up is flagged after this plus --no-blink-after)", float, gt=0, le=86400,
      into="liveness.first_blink_timeout_s"),
    S("--blink-timeout", 60.0, "seconds without a blink, after the first, before a possible spoof (people reading "
      "blink only a few times a minute)", float, gt=0, le=86400, into="liveness.blink_timeout_s"),
    S("--dashboard-url", "", "dashboard base URL for alerts and station status, e.g. http://127.0.0.1:5000 (empty: "
      "alerts are only logged)"),  # with --dashboard-token: RecognizerSettings.dashboard
    S("--dashboard-token", "", "station or service token for the dashboard (python -m dashboard add-station)"),
    S("--station-auth", "", "shared: the shared --token admits any station id (closed lab); dashboard: each edge "
      "proves its station id with that station's own token, checked by the dashboard",
      choices=("", "shared", "dashboard"), computed="dashboard when --dashboard-url is set, else shared"),
    # trust.station_auth
    S("--enrol-policy", "grant", "grant: ENROL needs a single-use grant the dashboard issued to a signed-in admin; "
      "open: any connected client may enrol any face (closed lab / demo only; logged loudly)",
      choices=("grant", "open"), into="trust.enrol_policy"),
    S("--credential-grace", 300.0, "seconds a station credential the dashboard confirmed is still accepted while "
      "the dashboard is unreachable (0: refuse every claim then)", float, ge=0, le=86400, into="trust.grace_s"),
    S("--data-key-file", "", "0600 file of data keys (base64, one a line; make one: facemon-recognizer data-key new "
      "--out FILE): the face index, captured photos and the outbox are encrypted at rest with it, and plain ones are "
      "sealed at start (empty: FACEMON_DATA_KEY, else stored unencrypted with a warning)", into="data_key_file"),
    S("--outbox", "var/outbox.sqlite3", "SQLite file where alerts wait until delivered", into="outbox.path"),
    S("--outbox-memory-events", 2000, "alert events held in memory at most while the outbox file cannot be written "
      "(disk full); the oldest are dropped beyond, and counted", int, ge=1, le=1_000_000, into="outbox.memory_events"),
    S("--outbox-memory-mb", 64, "MiB of evidence images held in memory at most while the outbox file cannot be "
      "written; the oldest images are dropped first", int, ge=1, le=65536, into="outbox.memory_mib"),
    S("--webhook-url", "", "also POST every alert event as JSON to this URL", into="webhook_url"),
    S("--webhook-images", False, "include the evidence JPEGs as base64 in webhook posts", parse_bool,
      into="webhook_images"),
    S("--alert-types", "all", "alert types to raise: all, or a comma-separated list of unknown_face, wrong_person, "
      "multiple_faces, no_face, no_blink, eyes_closed, camera_tamper"),  # alerts.enabled
    S("--unknown-after", 3.0, "seconds an unknown (or wrong) face must stay before its alert opens", float, ge=0,
      le=86400, into=("alerts.unknown_after_s", "alerts.wrong_person_after_s")),
    S("--multiple-after", 5.0, "seconds more than one face must stay before a multiple_faces alert", float, ge=0,
      le=86400, into="alerts.multiple_after_s"),
    S("--no-face-after", 30.0, "seconds the desk may be empty before a no_face alert", float, ge=0, le=86400,
      into="alerts.no_face_after_s"),
    S("--no-blink-after", 5.0, "seconds liveness must keep saying no_blink before a no_blink alert", float, ge=0,
      le=86400, into="alerts.no_blink_after_s"),
    S("--eyes-closed-after", 10.0, "seconds liveness must keep saying eyes_closed (closed over 2 s) before an "
      "eyes_closed alert", float, ge=0, le=86400, into="alerts.eyes_closed_after_s"),
    S("--cooldown", 60.0, "seconds after an alert closes before the same type opens again on that station", float,
      ge=0, le=86400, into="alerts.cooldown_s"),
    S("--review-after", 3.0, "seconds a face must stay not sure (someone near, nobody accepted) before one crop of it "
      "goes to the dashboard's review queue (no alert; recognizer/alerting/review.py)", float, ge=0, le=86400,
      into="review.after_s"),
    S("--review-per-minute", 30, "most not-sure faces posted to the review queue a minute, all desks together", int,
      ge=1, le=10000, into="review.per_minute"),
    S("--blur-bystanders", True, "in an alert's stored evidence, pixelate the faces the alert is not about (the live "
      "feed is unchanged; recognizer/alerting/bystanders.py)", parse_bool, into="blur_bystanders"),
    S("--status-interval", 5.0, "seconds between station status reports to the dashboard", float, ge=0.2, le=300,
      into="status_interval_s"),
    S("--gallery", "local", "local: the face index in --index (a lab or demo); dashboard: the one gallery in the "
      "dashboard's database, followed live and copied into --index so the node starts while the dashboard is down "
      "(a pool of nodes; needs --dashboard-url and a service --dashboard-token)", choices=("local", "dashboard"),
      into="gallery"),
    S("--node-name", "", "this node's name in a pool (told to edges and the dashboard)",
      computed="HOSTNAME:PORT with --health-port, else none"),
    # server.node: --node-name, else HOSTNAME:PORT for a pool member (--health-port)
    S("--health-port", 0, "serve GET /healthz on this port for a balancer: 200 only when the models and gallery are "
      "loaded and the node is not draining (0: none)", int, ge=0, le=65535, into="health_port"),
    S("--drain-timeout", 10.0, "on SIGTERM: seconds the stations get to move to another node before it stops", float,
      ge=0, le=300, into="drain_timeout_s"),
    S("--log-level", "INFO", "DEBUG, INFO, WARNING or ERROR"),  # read by main
)


def setting(dest_or_into: str) -> Setting:
    """The setting of flag dest `dest_or_into` (e.g. "accept_distance") or of field "section.field"."""
    for s in SETTINGS:
        if s.dest == dest_or_into or dest_or_into in s.into:
            return s
    raise KeyError(dest_or_into)


_BY_SECTION: dict[str, list[tuple[str, Setting]]] = {}
for _s in SETTINGS:
    for _target in _s.into:
        _section, _, _name = _target.rpartition(".")
        _BY_SECTION.setdefault(_section, []).append((_name, _s))


def check_section(obj: object, section: str) -> None:
    """Check each field of `obj` that a setting sets (its `into` is "`section`.field"; "" for RecognizerSettings'
    own fields) against that setting's bounds and choices: a part's config class calls this in `__post_init__`
    instead of restating them. ConfigError (a ValueError) naming the field and its flag."""
    for name, s in _BY_SECTION.get(section, ()):
        s.check(getattr(obj, name), f"{name} ({s.flag})")


def check_value(dest: str, value: object, name: str) -> None:
    """Check `value` of a field called `name` against the bounds of the setting `dest` (a field that is not an
    `into` target, e.g. `RegionParams.full_every` of --full-detect-every)."""
    setting(dest).check(value, f"{name} ({setting(dest).flag})")


def as_flags(values: dict[str, object]) -> str:
    """`{"match.accept_distance": 0.5, ...}` as the command line that sets them: "--accept-distance 0.5 ..."."""
    out = []
    for into, value in values.items():
        s = setting(into)
        if s.parse is parse_bool:
            out.append(s.flag if value else f"--no-{s.flag[2:]}")
        else:
            out.append(f"{s.flag} {value}")
    return " ".join(out)


def build_parser(prog: str = "facemon-recognizer", description: Optional[str] = None) -> SettingsParser:
    """Every setting as a flag, also settable by FACEMON_RECOGNIZER_<FLAG>; `parse_args` resolves flag > variable >
    default and checks each value (ConfigError naming the flag or variable)."""
    p = SettingsParser(prog=prog, env_prefix=ENV_PREFIX, description=description or DESCRIPTION)
    for s in SETTINGS:
        p.add(s)
    return p
