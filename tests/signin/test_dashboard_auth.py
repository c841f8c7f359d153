"""Dashboard side of desk sign-in: accounts with roles and identities, credential checks, limits, alerts."""
from __future__ import annotations

import base64
import datetime as dt

import pytest
import sqlalchemy as sa

from dashboard import accounts
from dashboard.__main__ import main
from dashboard.models import Alert, Evidence, SignInFailure, User
from dashboard.services import services
from tests.dashboard.conftest import PASSWORD, Tokens, build_app, make_jpeg


@pytest.fixture
def app(tmp_path):
    app = build_app(f"sqlite:///{tmp_path / 'd.sqlite3'}")
    with services(app).sessions() as db:
        accounts.create_user(db, "eva", PASSWORD, "evaluator", identity="lin_manuel_miranda")
        accounts.create_user(db, "sam", PASSWORD, "staff")
        accounts.create_user(db, "vic", PASSWORD, "viewer")
    yield app
    services(app).broker.close()
    services(app).engine.dispose()


@pytest.fixture
def tokens(app) -> Tokens:  # noqa: ANN001
    return Tokens(app)


def check(client, token: str, username: str, password: str, **extra):  # noqa: ANN001, ANN201
    return client.post("/api/auth/check", json={"username": username, "password": password, **extra},
                       headers=Tokens.header(token))


def test_right_password_gives_role_and_identity(app, tokens):
    c = app.test_client()
    r = check(c, tokens.desk01, "eva", PASSWORD)
    assert r.status_code == 200 and r.json == {"ok": True, "username": "eva", "role": "evaluator",
                                               "identity": "lin_manuel_miranda"}
    assert check(c, tokens.desk01, "sam", PASSWORD).json["role"] == "staff"
    assert check(c, tokens.desk01, "vic", PASSWORD).status_code == 403  # viewers have no desk role
    assert c.post("/api/auth/check", json={"username": "eva", "password": PASSWORD}).status_code == 401  # no token
    assert check(c, "not-a-token-at-all-0123456789", "eva", PASSWORD).status_code == 401


def test_fifth_failure_raises_alert_with_evidence_then_429(app, tokens):
    c = app.test_client()
    jpeg = make_jpeg()
    for i in range(4):
        r = check(c, tokens.desk01, "eva", f"wrong-{i}", image=base64.b64encode(jpeg).decode())
        assert r.status_code == 401 and r.json["reason"] == "wrong_password" and r.json["alert_id"] is None
    r = check(c, tokens.desk01, "eva", "wrong-5", image=base64.b64encode(jpeg).decode())
    assert r.status_code == 401 and r.json["alert_id"]
    with services(app).sessions() as db:
        alert = db.get(Alert, r.json["alert_id"])
        assert alert.type == "failed_sign_in" and alert.station_id == "desk-01" and alert.login_name == "eva"
        assert db.get(Evidence, (alert.alert_id, "image")).data == jpeg
    # now this account waits at this desk, even with the right password (5 s, doubling per further failure) ...
    r = check(c, tokens.desk01, "eva", PASSWORD)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 6
    # ... but nobody is locked out: the same account at another desk, another account (an admin) at this desk
    assert check(c, tokens.desk02, "eva", PASSWORD).status_code == 200
    assert check(c, tokens.desk01, "sam", PASSWORD).status_code == 200
    # a further failure after the wait doubles it
    with services(app).writer() as db:  # the wait has passed: move the pair's failures 6 s into the past
        for row in db.scalars(sa.select(SignInFailure)):
            row.at -= dt.timedelta(seconds=6)
        db.commit()
    assert check(c, tokens.desk01, "eva", "wrong-6").status_code == 401
    assert 6 <= int(check(c, tokens.desk01, "eva", PASSWORD).headers["Retry-After"]) <= 11


def test_face_check_failures_count_too(app, tokens):
    c = app.test_client()
    h = Tokens.header(tokens.desk01)
    assert c.post("/api/auth/failure", json={"username": "eva", "reason": "bogus"}, headers=h).status_code == 400
    for _ in range(5):
        r = c.post("/api/auth/failure", json={"username": "eva", "reason": "not_account_holder"}, headers=h)
        assert r.status_code == 201
    assert r.json["alert_id"]
    assert check(c, tokens.desk01, "eva", PASSWORD).status_code == 429


def test_evaluators_cannot_use_the_dashboard_page(app):
    c = app.test_client()
    page = c.get("/login").get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    c.post("/login", data={"username": "eva", "password": PASSWORD, "csrf_token": csrf})
    assert c.get("/api/alerts").status_code == 403


def test_cli_create_user_with_role_and_identity(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    assert main(["--db", db, "create-user", "--username", "eva", "--password", "long-enough-pw",
                 "--role", "evaluator"]) == 2
    assert "needs --identity" in capsys.readouterr().err
    assert main(["--db", db, "create-user", "--username", "eva", "--password", "long-enough-pw",
                 "--role", "evaluator", "--identity", "../x"]) == 2
    assert main(["--db", db, "create-user", "--username", "eva", "--password", "long-enough-pw",
                 "--role", "evaluator", "--identity", "lin_manuel_miranda"]) == 0
    assert "identity 'lin_manuel_miranda'" in capsys.readouterr().out
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        row = conn.execute(sa.select(User.role, User.identity, User.password_hash)).one()
    engine.dispose()
    assert row[0] == "evaluator" and row[1] == "lin_manuel_miranda" and "long-enough-pw" not in row[2]
