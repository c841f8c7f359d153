"""The audit page in a real browser (headless Chromium): an admin sees who looked at what, the chain intact, and
after a row is deleted by hand, the first broken link named. FACEMON_SCREENSHOT_DIR keeps the screenshots."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from dashboard import accounts
from dashboard.audit_models import AuditEntry
from dashboard.services import services
from tests.conftest import launch_chromium
from tests.dashboard.conftest import PASSWORD, LiveServer, Tokens, build_app, make_jpeg, meta, multipart

pytestmark = pytest.mark.browser


def test_the_audit_page_shows_looks_and_a_broken_chain(tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    app = build_app(f"sqlite:///{tmp_path / 'd.sqlite3'}")
    server = LiveServer(app)
    driver, profile = launch_chromium("1280,700")
    shots = Path(os.environ.get("FACEMON_SCREENSHOT_DIR", tmp_path))
    try:
        tokens = Tokens(app)
        m = meta()
        client = app.test_client()
        assert client.post("/api/alerts", data=multipart(m, make_jpeg()), headers=Tokens.header(tokens.desk01)).status_code in (200, 201)
        with services(app).sessions() as db:
            accounts.create_user(db, "admin", PASSWORD, "admin")
        driver.get(f"{server.url}/login")
        driver.find_element("name", "username").send_keys("admin")
        driver.find_element("name", "password").send_keys(PASSWORD)
        driver.find_element("css selector", "form button[type=submit]").click()
        # the login's answer must be in before the next page (a loaded box took longer than the next get)
        WebDriverWait(driver, 30).until(lambda d: "/login" not in d.current_url)
        driver.get(f"{server.url}/api/alerts/{m['alert_id']}/image")
        driver.get(f"{server.url}/admin/audit")
        chain = driver.find_element("id", "chain").text
        rows = driver.find_element("id", "audit").text
        assert chain.startswith("Chain intact") and "evidence.view" in rows and "alerts.list" in rows, (chain, rows)
        assert "127.0.0.1" in rows
        driver.save_screenshot(str(shots / "audit-intact.png"))
        with services(app).writer() as db:
            db.execute(sa.delete(AuditEntry).where(AuditEntry.action == "evidence.view"))
            db.commit()
        driver.get(f"{server.url}/admin/audit")
        chain = driver.find_element("id", "chain").text
        assert chain.startswith("Chain broken at entry 2"), chain
        driver.save_screenshot(str(shots / "audit-broken.png"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        server.stop()
        services(app).engine.dispose()
