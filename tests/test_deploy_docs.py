"""The deployment docs are executed: the systemd units and the env files and SQL of docs/deploy.md and docs/edge.md
are rendered and the programs run with exactly those settings on loopback (only addresses, ports, paths and
the secrets made on the way are put in), so a contradiction between the docs and the programs fails here.

Real processes: a dashboard on a real PostgreSQL database created by the doc's own SQL (SQLite when no server is
reachable: said in the skip/print), a recognizer started the way its unit starts it (ExecStartPre builds the
gallery), an edge from a file `facemon-dashboard add-stations` wrote, nginx with the shipped config in front."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional

import pytest
import requests

from shared.envfile import parse_env_file
from tests.procs import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCS = REPO / "docs"
DEPLOY = REPO / "deploy"
PG_URL = os.environ.get("FACEMON_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


# ---- reading the docs and units ----

def fenced_blocks(path: Path) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", path.read_text(), re.S | re.M)


def doc_env(path: Path, name: str) -> dict[str, str]:
    """The env file the doc shows as `# /etc/facemon/<name>`."""
    blocks = [b for b in fenced_blocks(path) if b.startswith(f"# /etc/facemon/{name}\n")]
    assert len(blocks) == 1, f"{path.name} must show /etc/facemon/{name} once"
    return parse_env_file(blocks[0])


def doc_sql(path: Path, dialect: str) -> list[str]:
    block = next(b for b in fenced_blocks(path) if b.startswith(f"-- {dialect}"))
    code = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in code.split(";") if s.strip()]


def unit(path: Path) -> dict[str, list[str]]:
    """The [Service] keys of a unit (a key may repeat: Environment=, ExecStartPre=)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def unit_env(u: dict[str, list[str]]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in u.get("Environment", []))


def header_env(path: Path) -> dict[str, str]:
    """The FACEMON_* example lines of a unit's header comment."""
    return dict(m.groups() for m in re.finditer(r"^#\s+(FACEMON_[A-Z_]+)=(\S+)", path.read_text(), re.M))


def render(text: str, paths: dict[str, Path], env: dict[str, str]) -> str:
    """A unit's command line on this machine: its folders moved under the test's, ${VAR} from its environment."""
    for old, new in paths.items():
        text = text.replace(old, str(new))
    return re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], text)


def known_env() -> dict[str, set[str]]:
    from dashboard.config import ENV_PREFIX, DashboardConfig
    from edge.config import build_parser as edge_parser
    from recognizer.settings import ENV_PREFIX as REC_PREFIX
    from recognizer.settings import SETTINGS

    import dataclasses
    return {
        "FACEMON_EDGE_": {env for _, env in edge_parser({})._settings},
        "FACEMON_RECOGNIZER_": {s.env(REC_PREFIX) for s in SETTINGS},
        "FACEMON_DASHBOARD_": {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(DashboardConfig)},
    }


def test_every_setting_the_units_and_docs_name_exists():
    """A variable a program does not know is silently ignored by it: here it is an error."""
    known = known_env()
    named: dict[str, str] = {}
    for path in sorted(DEPLOY.glob("*.service")):
        for key in list(unit_env(unit(path))) + list(header_env(path)):
            named[key] = path.name
    for name in ("dashboard.env", "recognizer.env"):
        named.update({k: f"docs/deploy.md {name}" for k in doc_env(DOCS / "deploy.md", name)})
    named.update({k: "docs/edge.md edge.env" for k in doc_env(DOCS / "edge.md", "edge.env")})
    unknown = [f"{k} ({where})" for k, where in named.items()
               if not any(k.startswith(p) and k in names for p, names in known.items())
               and k.startswith(tuple(known)) and not k.startswith("FACEMON_LB_")]
    assert not unknown, f"settings no program has: {unknown}"
    for path in sorted(DEPLOY.glob("*.service")):
        for cmd in unit(path).get("ExecStart", []) + unit(path).get("ExecStartPre", []):
            program = Path(cmd.lstrip("-").split()[0]).name
            if cmd.lstrip("-").startswith("/opt/facemon/.venv/bin/"):
                assert (BIN / program).exists(), f"{path.name} runs {program}, which the project does not install"


def test_the_edge_docs_example_is_what_the_edge_accepts(tmp_path):
    from edge.env_check import check

    env = doc_env(DOCS / "edge.md", "edge.env")
    assert env.keys() == header_env(DEPLOY / "facemon-edge.service").keys()  # the unit and the doc say the same
    f = tmp_path / "edge.env"
    f.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    assert check(f).startswith("desk-07: recognizer 192.168.1.10:8002, camera picamera, sign-in on")


# ---- a room on loopback ----

def _postgres_database() -> Iterator[Optional[str]]:
    """A database and its owner made with docs/deploy.md's own SQL on the local PostgreSQL (None when absent)."""
    import sqlalchemy as sa

    try:
        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - no server: SQLite instead, said in the output
        print(f"no PostgreSQL at {PG_URL} ({type(exc).__name__}); the room runs on SQLite")
        yield None
        return
    suffix = uuid.uuid4().hex[:8]
    db, role = f"facemon_doc_{suffix}", f"facemon_doc_{suffix}"
    with admin.connect() as conn:
        for stmt in doc_sql(DOCS / "deploy.md", "PostgreSQL"):
            conn.execute(sa.text(re.sub(r"\bfacemon\b", lambda m: role, stmt)))
    url = doc_env(DOCS / "deploy.md", "dashboard.env")["FACEMON_DASHBOARD_DATABASE_URL"]
    url = re.sub(r"//facemon:", f"//{role}:", url).rsplit("/", 1)[0] + f"/{db}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


def _login(base: str) -> requests.Session:
    s = requests.Session()
    s.verify, s.trust_env = False, False  # the proxy's throw-away certificate (a CA bundle from the env would win)
    page = s.get(f"{base}/login", timeout=10).text  # noqa: S113
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    r = s.post(f"{base}/login", data={"username": "admin", "password": "doc-admin-password", "csrf_token": token},
               timeout=10, allow_redirects=False)
    assert r.status_code == 302, r.text
    return s


@pytest.mark.slow
def test_one_room_from_the_docs_runs_on_loopback(tmp_path):
    """docs/deploy.md step by step: database user, dashboard, service token, recognizer as its unit runs it,
    a desk provisioned by add-stations and started from its file as the edge unit runs it; the desk is online."""
    procs: list[ManagedProcess] = []
    pg = _postgres_database()
    db_url = next(pg)
    try:
        dash_port, rec_port, web_port = free_port(), free_port(), free_port()
        dash_url = f"http://127.0.0.1:{dash_port}"
        var = tmp_path / "var" / "lib" / "facemon"
        (var / "known_faces").mkdir(parents=True)
        for person in ("barack_obama", "joe_biden"):
            shutil.copytree(REPO / "known_faces" / person, var / "known_faces" / person)
        paths = {"/var/lib/facemon": var, "/opt/facemon": REPO}

        # 3. the dashboard, with the doc's env file
        dash_env = doc_env(DOCS / "deploy.md", "dashboard.env")
        dash_env.update(FACEMON_DASHBOARD_DATABASE_URL=db_url or f"sqlite:///{var / 'dashboard.sqlite3'}",
                        FACEMON_DASHBOARD_PORT=str(dash_port))
        key = tmp_path / "etc" / "data.key"  # the doc's /etc/facemon/data.key, made by its own command
        subprocess.run([str(BIN / "facemon-dashboard"), "data-key", "new", "--out", str(key)], check=True,
                       capture_output=True, timeout=60)
        assert dash_env["FACEMON_DASHBOARD_DATA_KEY_FILE"] == "/etc/facemon/data.key"
        dash_env["FACEMON_DASHBOARD_DATA_KEY_FILE"] = str(key)
        proxied = bool(shutil.which("nginx") and shutil.which("openssl"))
        if not proxied:  # secure cookies need the HTTPS proxy; without nginx here, people use plain HTTP
            print("no nginx/openssl here: the dashboard is used without its HTTPS proxy")
            dash_env["FACEMON_DASHBOARD_SECURE_COOKIES"] = "false"
        cli = lambda *a: subprocess.run([str(BIN / "facemon-dashboard"), *a], env={**os.environ, **dash_env},  # noqa: E731
                                        capture_output=True, text=True, timeout=120, check=True, cwd=tmp_path).stdout
        assert "schema revision" in cli("db", "upgrade")
        cli("create-admin", "--username", "admin", "--password", "doc-admin-password")
        service_token = cli("add-station", "--station-id", "recognizer", "--kind", "service").strip().splitlines()[-1]
        du = unit(DEPLOY / "facemon-dashboard.service")  # as its unit runs it: Environment=, the env file, ExecStart
        dash_env = {**{k: render(v, {"/var/lib/facemon-dashboard": var}, {}) for k, v in unit_env(du).items()}, **dash_env}
        exec_start = render(du["ExecStart"][0], paths, dash_env).split()
        dashboard = ManagedProcess("dashboard", [str(BIN / Path(exec_start[0]).name), *exec_start[1:]],
                                   tmp_path / "dashboard.log", dash_env)
        procs.append(dashboard)
        dashboard.start(lambda: _ok(f"{dash_url}/healthz"), timeout=60)

        # 4. the recognizer as its unit runs it: Environment=, then the doc's env file, ExecStartPre, ExecStart
        u = unit(DEPLOY / "facemon-recognizer.service")
        rec_env = {k: render(v, paths, {}) for k, v in unit_env(u).items()}
        rec_env.update(doc_env(DOCS / "deploy.md", "recognizer.env"))
        rec_env["FACEMON_RECOGNIZER_DATA_KEY_FILE"] = str(key)  # the same key file on this one box
        rec_env.update(FACEMON_RECOGNIZER_DASHBOARD_URL=dash_url, FACEMON_RECOGNIZER_DASHBOARD_TOKEN=service_token,
                       FACEMON_RECOGNIZER_HOST="127.0.0.1", FACEMON_RECOGNIZER_PORT=str(rec_port))
        for pre in u["ExecStartPre"]:
            cmd = render(pre.lstrip("-"), paths, rec_env).split()
            cmd[0] = str(BIN / Path(cmd[0]).name)
            built = subprocess.run(cmd, env={**os.environ, **rec_env}, capture_output=True, text=True, timeout=300)
            assert built.returncode == 0, built.stderr
        assert (var / "encodings" / "index.npz").exists() and "barack_obama" in built.stdout
        exec_start = render(u["ExecStart"][0], paths, rec_env).split()
        rec = ManagedProcess("recognizer", [str(BIN / Path(exec_start[0]).name), *exec_start[1:]],
                             tmp_path / "recognizer.log", rec_env)
        procs.append(rec)
        rec.start(lambda: _accepts(rec_port), timeout=120)

        # 5. the desks in one step, then desk-07 from its file as the edge unit runs it
        cli("add-stations", "desk-01..desk-03", "desk-07", "--out", str(tmp_path / "edges"), "--recognizer",
            f"127.0.0.1:{rec_port}", "--recognizer-token", rec_env["FACEMON_RECOGNIZER_TOKEN"], "--dashboard-url", dash_url)
        edge_env = {k: render(v, {"/var/lib/facemon-edge": tmp_path / "edge-state"}, {})
                    for k, v in unit_env(unit(DEPLOY / "facemon-edge.service")).items()}
        edge_env.update(parse_env_file((tmp_path / "edges" / "desk-07.env").read_text()))
        edge_env.update(FACEMON_EDGE_SOURCE=str(REPO / "samples" / "hamilton_clip.mp4"),  # no Pi camera here
                        FACEMON_EDGE_WEB_HOST="127.0.0.1", FACEMON_EDGE_WEB_PORT=str(web_port))
        edge = ManagedProcess("edge", [str(BIN / "facemon-edge")], tmp_path / "edge.log", edge_env)
        procs.append(edge)
        edge.start(lambda: _ok(f"http://127.0.0.1:{web_port}/signin"), timeout=60)

        # or a desk from a single-use code (the doc's "Or: a single-use code per desk"), as setup.sh --code fetches it
        codes = cli("add-stations", "desk-08", "--codes", "--recognizer", f"127.0.0.1:{rec_port}", "--recognizer-token",
                    rec_env["FACEMON_RECOGNIZER_TOKEN"], "--dashboard-url", dash_url)
        code = re.search(r"desk-08  (\S+)", codes).group(1)
        fetch = lambda: subprocess.run([sys.executable, "-m", "edge.enrolment_code", "--code", code, "--dashboard",  # noqa: E731
                                        dash_url, "--out", str(tmp_path / "desk-08.env")], cwd=REPO, capture_output=True,
                                       text=True, timeout=60)
        fetched = fetch()
        assert fetched.returncode == 0 and "desk-08: recognizer 127.0.0.1" in fetched.stdout, fetched.stderr
        again = fetch()
        assert again.returncode == 2 and "already used" in again.stderr

        people_url = dash_url
        if proxied:  # the shipped nginx config in front of it, with HTTPS: people come in through it
            people_url = f"https://127.0.0.1:{_nginx(tmp_path, dash_port, procs)}"
            assert requests.get(f"{people_url}/healthz", verify=False, timeout=10).json()["status"] == "ok"
        if shutil.which("caddy"):  # or the shipped Caddyfile in front (its own internal CA here)
            caddy_url = f"https://127.0.0.1:{_caddy(tmp_path, dash_port, procs)}"
            assert requests.get(f"{caddy_url}/healthz", verify=False, timeout=10).json()["status"] == "ok"
            _login(caddy_url)  # secure cookies over Caddy's HTTPS
        else:
            print("no caddy here: deploy/Caddyfile not run")
        session = _login(people_url)
        deadline = time.time() + 60
        state = None
        while time.time() < deadline and state != "online":
            time.sleep(1)
            desks = {s["station_id"]: s for s in session.get(f"{people_url}/api/stations", timeout=10).json()["stations"]}
            state = desks.get("desk-07", {}).get("state")
        assert state == "online", f"desk-07 is {state}:\n{rec.output()[-3000:]}\n{edge.output()[-2000:]}"
        assert desks["desk-01"]["state"] == "never"  # provisioned, not started
        assert (tmp_path / "edge-state" / "secret_key").exists()  # the unit's state folder is where the edge writes
        page = requests.get(f"http://127.0.0.1:{web_port}/video_feed_page", timeout=10, allow_redirects=False)
        assert page.status_code in (302, 303) and "/signin" in page.headers["Location"]  # sign-in is on
        if db_url:
            print(f"room ran on PostgreSQL ({db_url.rsplit('@', 1)[-1]})")

    finally:
        for p in reversed(procs):
            p.stop()
        next(pg, None)


def _nginx(tmp_path: Path, dash_port: int, procs: list[ManagedProcess]) -> int:
    """deploy/nginx-facemon.conf with a throw-away certificate and free ports; returns its HTTPS port."""
    https, http = free_port(), free_port()
    cert, key = tmp_path / "dashboard.crt", tmp_path / "dashboard.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=dashboard.lab",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    site = (DEPLOY / "nginx-facemon.conf").read_text()
    site = (site.replace("listen 443 ssl;", f"listen 127.0.0.1:{https} ssl;").replace("listen 80;", f"listen 127.0.0.1:{http};")
            .replace("/etc/ssl/facemon/dashboard.crt", str(cert)).replace("/etc/ssl/facemon/dashboard.key", str(key))
            .replace("127.0.0.1:5000", f"127.0.0.1:{dash_port}"))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/nginx-error.log;\n"
        "events { worker_connections 64; }\n"
        f"http {{ access_log off; client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path}; include {tmp_path}/site.conf; }}\n")
    nginx = ManagedProcess("nginx", ["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")], tmp_path / "nginx.log")
    procs.append(nginx)
    nginx.start(lambda: _accepts(https), timeout=20)
    return https


def _caddy(tmp_path: Path, dash_port: int, procs: list[ManagedProcess]) -> int:
    """deploy/Caddyfile as shipped, its site on 127.0.0.1 with free ports and Caddy's internal CA (no Let's Encrypt,
    no admin port, nothing installed in the system's trust store); returns its HTTPS port."""
    https, http = free_port(), free_port()
    site = (DEPLOY / "Caddyfile").read_text()
    assert "dashboard.lab {" in site and "127.0.0.1:5000" in site
    site = site.replace("dashboard.lab {", f"https://127.0.0.1:{https} {{").replace("127.0.0.1:5000", f"127.0.0.1:{dash_port}")
    (tmp_path / "Caddyfile").write_text("{\n\tadmin off\n\tlocal_certs\n\tskip_install_trust\n\tauto_https disable_redirects\n"
                                        f"\thttp_port {http}\n\thttps_port {https}\n}}\n" + site)
    home = tmp_path / "caddy-home"
    caddy = ManagedProcess("caddy", ["caddy", "run", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
                           tmp_path / "caddy.log", {"HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
                                                     "XDG_CONFIG_HOME": str(home / "config")})
    procs.append(caddy)
    caddy.start(lambda: _ok(f"https://127.0.0.1:{https}/healthz"), timeout=30)  # listening, and its certificate made
    return https


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2, verify=False).status_code == 200  # https: a proxy's throw-away certificate
    except requests.RequestException:
        return False


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_mariadb_user_of_the_docs_can_run_the_dashboard(tmp_path):
    """docs/deploy.md's MariaDB SQL, run as written (names made unique), then the URL the doc gives migrates."""
    import sqlalchemy as sa

    root = os.environ.get("FACEMON_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql")
    try:
        admin = sa.create_engine(root, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no MariaDB at {root} ({type(exc).__name__})")
    name = f"facemon_doc_{uuid.uuid4().hex[:8]}"
    doc_url = re.search(r"`(mysql\+pymysql://\S+)`", (DOCS / "deploy.md").read_text()).group(1)
    # the doc's user connects from localhost; the test reaches the server over TCP, so 'localhost' is the host
    url = re.sub(r"\bfacemon\b", name, doc_url).replace("@localhost/", "@127.0.0.1/")
    try:
        with admin.connect() as conn:
            for stmt in doc_sql(DOCS / "deploy.md", "MariaDB"):
                stmt = re.sub(r"\bfacemon\b", name, stmt)
                conn.execute(sa.text(stmt.replace("'localhost'", "'%'") if "USER" in stmt or "GRANT" in stmt else stmt))
        out = subprocess.run([str(BIN / "facemon-dashboard"), "--db", url, "db", "upgrade"], capture_output=True,
                             text=True, timeout=120, cwd=tmp_path)
        assert out.returncode == 0 and "schema revision" in out.stdout, out.stderr[-2000:]
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
            conn.execute(sa.text(f"DROP USER IF EXISTS '{name}'@'%'"))
        admin.dispose()
