"""Command line: `facemon-dashboard serve|create-admin|create-user|add-station|add-stations|revoke-station|enrol-grant|
enrolments|purge|audit verify|audit export|db upgrade` (also `python -m dashboard ...`)."""
from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

from dashboard.config import MiB, DashboardConfig, flag_help
from shared.config import ConfigError, setup_logging
from shared.fsmode import private_umask
from shared.web_server import quiet_web_server_logs

log = logging.getLogger("dashboard")
PASSWORD_ENV = "FACEMON_DASHBOARD_ADMIN_PASSWORD"
TOKEN_ENV = "FACEMON_DASHBOARD_STATION_TOKEN"
RECOGNIZER_TOKEN_ENV = "FACEMON_RECOGNIZER_TOKEN"


class CommandError(ValueError):
    """A command's arguments that cannot be carried out (not an admin, a value out of range)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facemon-dashboard", description="facemon alert dashboard (Flask + SQLAlchemy).")
    # these flags' help (text, default, variable) comes from the settings' declarations in dashboard/config.py
    p.add_argument("--db", dest="database_url", help=flag_help("database_url", "{help}{default} [env {env}; a "
                                                                "relative sqlite path is from the current folder]"))
    p.add_argument("--log-level", help=flag_help("log_level"))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the web server (migrates the schema first)",
                       epilog="Every other FACEMON_DASHBOARD_* setting is listed in docs/dashboard.md.")
    s.add_argument("--host", help=flag_help("host"))
    s.add_argument("--port", type=int, help=flag_help("port"))
    body = f" (default: {DashboardConfig.max_body_bytes / MiB:g})"
    s.add_argument("--max-body-mib", type=float, help=flag_help("max_body_bytes", "largest accepted upload in MiB"
                                                                + body + " [env {env}, in bytes]"))
    s.add_argument("--threads", dest="web_threads", type=int, help=flag_help("web_threads"))

    for name, role_help in (("create-admin", "an admin"), ("create-user", "a viewer, evaluator, staff or admin")):
        u = sub.add_parser(name, help=f"add {role_help} account, or reset its password")
        u.add_argument("--username", required=True)
        u.add_argument("--password", help=f"the password (else env {PASSWORD_ENV}, else asked for)")
        if name == "create-user":
            u.add_argument("--role", choices=("viewer", "evaluator", "staff", "admin"), default="viewer",
                           help="viewer: dashboard only; evaluator: signs in at a desk; staff: dashboard and desk pages; "
                                "admin: everything, enrolment included")
            u.add_argument("--identity", help="enrolled face name (known_faces/NAME) a desk sign-in is checked "
                                              "against; required for evaluators")

    a = sub.add_parser("add-station", help="create a token for a station (or a recognizer service); prints it once. "
                       "A station token is also that station's credential at the recognizer (--station-auth dashboard)")
    a.add_argument("--station-id", required=True, help="station id such as desk-01 (or a service name)")
    a.add_argument("--kind", choices=("station", "service"), default="station",
                   help="station: may post only for itself; service: a recognizer host, may post for any station")
    a.add_argument("--token", help=f"use this token instead of a random one (>= 24 characters; also env {TOKEN_ENV}), for scripted demos")

    m = sub.add_parser("add-stations", help="provision a room: a token and a ready edge env file (0600) per desk, "
                       "e.g. add-stations desk-01..desk-40 --out edges/ --recognizer 10.0.0.5:8002 --dashboard-url https://dash.lab")
    m.add_argument("stations", nargs="+", metavar="STATION", help="station ids or ranges: desk-01..desk-40, desk-41")
    m.add_argument("--out", type=Path, help="folder for the <station>.env files (made 0700); or --codes")
    m.add_argument("--codes", action="store_true", help="instead of files: print a single-use, expiring enrolment code "
                   "per desk; at the desk, scripts/setup.sh edge --code CODE --dashboard URL fetches its env file")
    m.add_argument("--code-ttl-hours", type=float, default=48.0, help="hours a code stays redeemable (default 48)")
    m.add_argument("--recognizer", required=True, help="HOST:PORT the edges connect to (the recognizer or its balancer)")
    m.add_argument("--recognizer-token", help=f"the recognizer's shared --token (else env {RECOGNIZER_TOKEN_ENV})")
    m.add_argument("--dashboard-url", required=True, help="this dashboard's URL as the desks reach it (https://... behind the proxy)")
    m.add_argument("--source", default="picamera", help="camera source written for every desk (default: %(default)s)")
    m.add_argument("--replace", action="store_true", help="revoke the stations' existing tokens and rewrite their files")

    r = sub.add_parser("revoke-station", help="revoke every active token of a station or service (the recognizer "
                       "refuses that station's next handshake)")
    r.add_argument("--station-id", required=True)

    e = sub.add_parser("enrol-grant", help="issue one single-use enrol grant (for scripted enrolment); prints it once")
    e.add_argument("--admin", required=True, help="the admin account the grant speaks for (recorded as `by`)")
    e.add_argument("--station-id", required=True, help="the station whose connection may redeem it")
    e.add_argument("--identity", required=True, help="the name that may be enrolled with it")
    e.add_argument("--ttl", type=float, default=60.0, help="seconds it stays redeemable (default 60)")

    la = sub.add_parser("enrolments", help="print the enrolment audit: grants issued, redeemed, and their outcome")
    la.add_argument("--limit", type=int, default=50)

    rt = sub.add_parser("retention", help="apply the retention periods now (the running server does it every "
                        "retention_interval_s) and print what was removed")
    rt.add_argument("--compact", action="store_true", help="also compact the database (VACUUM) afterwards")

    g = sub.add_parser("purge", help="delete evidence images of alerts older than N days (the alerts stay)")
    g.add_argument("--older-than-days", type=float, required=True)

    au = sub.add_parser("audit", help="the audit of every look: verify its hash chain, or export it as CSV")
    au.add_argument("action", choices=("verify", "export"), help="verify: exit 1 and name the first broken link if "
                    "an entry was edited or removed; export: the whole log with its hashes as CSV")
    au.add_argument("--out", type=Path, help="export: write to this file (default: standard output)")

    xp = sub.add_parser("export-person", help="everything held about one person (GDPR Art. 15): person.json and "
                        "images in --out (0700); audited")
    xp.add_argument("name", help="the enrolled name (known_faces/NAME)")
    xp.add_argument("--out", type=Path, required=True, help="folder to write (created; must be empty or new)")

    er = sub.add_parser("erase-person", help="remove a person (GDPR Art. 17): encodings, photos, review faces; every "
                        "recognizer drops them as it follows the gallery; audited")
    er.add_argument("name")

    dk = sub.add_parser("data-key", help="the key that seals encodings, photos and evidence at rest: new (a 0600 "
                        "key file) or rotate (seal everything with a fresh key, drop the old one)")
    dk.add_argument("action", choices=("new", "rotate"))
    dk.add_argument("--out", type=Path, help="new: the key file to create (else FACEMON_DASHBOARD_DATA_KEY_FILE)")
    for flag, what in (("index", "face index folder"), ("known-faces", "captured photos' folder"),
                       ("outbox", "outbox file")):
        dk.add_argument(f"--recognizer-{flag}", type=Path, help=f"rotate: a stopped recognizer on this box that shares "
                        f"the key file: its {what}, sealed with the new key too")

    d = sub.add_parser("db", help="schema migrations")
    d.add_argument("action", choices=("upgrade", "current"), help="upgrade: migrate to the newest schema; current: print the revision")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    private_umask()  # the database (evidence, password hashes, the session key): 0600 in 0700 folders
    args = build_parser().parse_args(argv)
    overrides = {"database_url": args.database_url, "log_level": args.log_level}
    if args.command == "serve":
        overrides.update(host=args.host, port=args.port, web_threads=args.web_threads,
                         max_body_bytes=None if args.max_body_mib is None else int(args.max_body_mib * 1024 * 1024))
    try:
        config = DashboardConfig.from_env(**overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)  # one record, one line: control characters in logged values escaped
    quiet_web_server_logs()
    from dashboard.db import DatabaseError

    from shared.crypto import DataKeyError

    try:
        return _run(args, config)
    except (DatabaseError, DataKeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, config: DashboardConfig) -> int:
    from dashboard import db as dbmod

    if args.command == "serve":
        return serve(config)
    if args.command == "data-key":
        return _data_key_command(args, config)
    from dashboard import data_key

    engine = data_key.open_engine(config)
    if args.command == "db":
        if args.action == "upgrade":
            dbmod.upgrade(engine)
        print(f"schema revision: {dbmod.current_revision(engine)} (newest: {dbmod.head_revision()})")
        return 0
    dbmod.upgrade(engine)
    data_key.check(engine)
    if args.command == "retention":
        from dashboard import retention

        counts = retention.apply(dbmod.make_session_factory(engine, write=True),
                                 retention.RetentionPolicy.from_config(config))
        print("removed: " + (", ".join(f"{v} {k}" for k, v in counts.items()) or "nothing (every period is 0)"))
        if args.compact:
            print(f"compacted ({retention.compact(engine)})")
        return 0
    with dbmod.make_session_factory(engine)() as db:
        return _admin_command(args, db)


def _admin_command(args: argparse.Namespace, db) -> int:  # noqa: ANN001
    import sqlalchemy as sa

    from dashboard import enrolment_codes, grants, provisioning, store
    from dashboard.accounts import AccountError, create_user
    from dashboard.models import ApiToken, User, utcnow
    from dashboard.station_tokens import TokenError, create_token
    from shared.alert_wire import BadAlert, parse_station
    from shared.names import InvalidName, validate_name

    try:
        if args.command in ("create-admin", "create-user"):
            password = args.password or os.environ.get(PASSWORD_ENV) or _ask_password()
            role = "admin" if args.command == "create-admin" else args.role
            user = create_user(db, args.username, password, role, getattr(args, "identity", None))
            linked = f", identity {user.identity!r}" if user.identity else ""
            print(f"user {user.username!r} ({user.role}{linked}) saved")
        elif args.command == "add-station":
            name = parse_station(args.station_id)
            token = create_token(db, name, args.kind, args.token or os.environ.get(TOKEN_ENV))
            print(f"{args.kind} token for {name!r} (shown only once; only its hash is stored):")
            print(token)
        elif args.command == "add-stations":
            site = provisioning.EdgeSite(args.recognizer, args.recognizer_token or os.environ.get(RECOGNIZER_TOKEN_ENV, ""),
                                         args.dashboard_url, args.source)
            if args.codes == (args.out is not None):
                raise CommandError("add-stations needs either --out DIR (env files) or --codes (enrolment codes)")
            if args.codes:
                issued = enrolment_codes.issue(db, args.stations, site, f"cli:{getpass.getuser()}",
                                               args.code_ttl_hours, args.replace)
                print(f"{len(issued)} enrolment code(s), each good once until {issued[0].expires_at:%Y-%m-%d %H:%M} UTC "
                      "(only their hashes are stored):")
                for item in issued:
                    print(f"  {item.station}  {item.code}")
                print(f"on each desk's Pi: scripts/setup.sh edge --pi --code CODE --dashboard {args.dashboard_url}")
                return 0
            files = provisioning.provision(db, args.stations, site, args.out, args.replace)
            print(f"{len(files)} station(s) provisioned: a token each (only its hash is stored) and an env file "
                  f"(0600) in {args.out}/:")
            for path in files:
                print(f"  {path}")
            print("on each desk's Pi: scripts/setup.sh edge --pi --env-file STATION.env")
        elif args.command == "revoke-station":
            n = db.execute(sa.update(ApiToken).where(ApiToken.name == args.station_id, ApiToken.revoked_at.is_(None))
                           .values(revoked_at=utcnow())).rowcount
            db.commit()
            print(f"revoked {n} token(s) of {args.station_id!r}")
        elif args.command == "enrol-grant":
            station = parse_station(args.station_id)
            try:
                identity = validate_name(args.identity, "identity")
            except InvalidName as exc:
                raise CommandError(str(exc)) from None
            admin = db.scalar(sa.select(User).where(User.username == args.admin))
            if admin is None or admin.role != "admin":
                raise CommandError(f"{args.admin!r} is not an admin account")
            if not 5 <= args.ttl <= 3600:
                raise CommandError("--ttl must be 5..3600 seconds")
            grant, row = grants.issue_grant(db, admin.username, station, identity, args.ttl)
            print(f"enrol grant {row.id}: {admin.username!r} may enrol {identity!r} at {station!r} until "
                  f"{row.expires_at.isoformat()} (single-use, shown once):")
            print(grant)
        elif args.command == "enrolments":
            for g in grants.enrolment_audit(db, args.limit):
                print(f"{g.id}\t{g.issued_at.isoformat()}\tby={g.admin}\tstation={g.station_id}\tidentity={g.identity}"
                      f"\tused={g.used_at.isoformat() if g.used_at else '-'}\t{g.outcome or '-'}\t{g.reason or ''}")
        elif args.command in ("export-person", "erase-person"):
            return _person_command(args, db)
        elif args.command == "audit":
            return _audit_command(args, db)
        elif args.command == "purge":
            if args.older_than_days < 0:
                raise CommandError("--older-than-days must not be negative")
            n = store.purge_evidence(db, args.older_than_days)
            print(f"deleted {n} evidence image(s) of alerts older than {args.older_than_days:g} days")
    except (AccountError, TokenError, CommandError, BadAlert, provisioning.ProvisionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _person_command(args: argparse.Namespace, db) -> int:  # noqa: ANN001
    from dashboard import audit, person_data
    from shared.names import InvalidName, validate_name

    try:
        name = validate_name(args.name, "name")
    except InvalidName as exc:
        raise CommandError(str(exc)) from None
    actor = f"cli:{getpass.getuser()}"
    factory = sessionmaker_of(db)
    if args.command == "erase-person":
        removed, faces, seq = person_data.erase_person(factory, name, actor, address="")
        if not removed:
            raise CommandError(f"nobody named {name!r} is enrolled")
        print(f"erased {name!r}: {removed} encodings and photos, {faces} review faces (gallery change {seq}); "
              "every recognizer following the gallery drops them within seconds")
        return 0
    if args.out.exists() and any(args.out.iterdir()):
        raise CommandError(f"{args.out} is not empty; give a new folder")
    result = person_data.export_person(db, name, args.out)
    audit.record_now(factory, actor, "person.export", name, f"{len(result['files'])} files", address="")
    print(f"wrote {args.out / 'person.json'} and {len(result['files'])} images: {len(result['encodings'])} encodings, "
          f"{len(result['review_faces'])} review faces, {len(result['alerts'])} alerts, {len(result['audit'])} audit entries")
    return 0


def sessionmaker_of(db):  # noqa: ANN001, ANN201
    """A write-session factory on `db`'s engine (for work that commits in its own transactions)."""
    from dashboard import db as dbmod

    return dbmod.make_session_factory(db.get_bind(), write=True)


def _data_key_command(args: argparse.Namespace, config: DashboardConfig) -> int:
    from dashboard import data_key
    from shared.crypto import KeyRing, new_key, write_ring

    target = args.out or (Path(config.data_key_file) if config.data_key_file else None)
    if target is None:
        raise SystemExit("error: say where the key file is: --out FILE or FACEMON_DASHBOARD_DATA_KEY_FILE")
    if args.action == "new":
        if target.exists():
            raise SystemExit(f"error: {target} exists; a new key would make its data unreadable (rotate instead)")
        target.parent.mkdir(parents=True, exist_ok=True)
        ring = KeyRing((new_key(),))
        write_ring(target, ring)
        print(f"data key {ring.ids()[0]} written to {target} (0600); set FACEMON_DASHBOARD_DATA_KEY_FILE={target} "
              "and keep a copy offline: without it the data cannot be read")
        return 0
    files = None
    if args.recognizer_index or args.recognizer_known_faces or args.recognizer_outbox:
        from recognizer.data_key import RecognizerFiles

        files = RecognizerFiles(args.recognizer_index, args.recognizer_known_faces, args.recognizer_outbox)
    kid, counts = data_key.rotate(config, target, files)
    print(f"rotated to data key {kid} in {target}: re-sealed " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0


def _audit_command(args: argparse.Namespace, db) -> int:  # noqa: ANN001
    from dashboard import audit

    if args.action == "verify":
        report = audit.verify(db)
        if report.ok:
            print(f"audit chain intact: {report.checked} entries checked")
            return 0
        print(f"audit chain BROKEN at entry {report.broken_at}: {report.reason} "
              f"({report.checked} entries checked before it)", file=sys.stderr)
        return 1
    out = open(args.out, "w", newline="") if args.out else sys.stdout  # noqa: SIM115 - stdout is not ours to close
    try:
        for chunk in audit.export_csv(db):
            out.write(chunk)
    finally:
        if args.out:
            out.close()
    return 0


def _ask_password() -> str:
    if not sys.stdin.isatty():
        raise SystemExit(f"error: no password given; use --password or env {PASSWORD_ENV}")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        raise SystemExit("error: the passwords differ")
    return first


def serve(config: DashboardConfig) -> int:
    """Run the production web server (waitress, `shared.web_server`) until SIGINT/SIGTERM; live streams are ended
    and requests in service get `stop_grace_s` to finish on the way out."""
    from dashboard.app import create_app
    from dashboard.services import services
    from shared.web_server import WebServer

    app = create_app(config)
    svc = services(app)
    server = WebServer(app, config.web_server(), on_stop=svc.broker.close)

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        server.stop(wait=False)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    host = "127.0.0.1" if config.host in ("0.0.0.0", "") else config.host
    log.info("dashboard listening on http://%s:%d/", host, server.port)
    try:
        server.serve_forever()
    finally:
        svc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
