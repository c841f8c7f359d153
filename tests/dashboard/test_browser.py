"""The page in a real headless Chromium: log in, an alert posted over HTTP appears live, filter, acknowledge."""
from __future__ import annotations

import json
import shutil
from typing import Iterator

import pytest
import requests

from tests.conftest import launch_chromium
from tests.dashboard.conftest import PASSWORD, login, make_jpeg, meta

pytestmark = pytest.mark.browser
SCREENSHOT = "/tmp/facemon-dashboard.png"


@pytest.fixture
def driver() -> Iterator[object]:
    drv, profile = launch_chromium("1400,1000")
    drv.implicitly_wait(0)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _post(server, token: str, **fields: object) -> str:  # noqa: ANN001
    m = meta(**fields)
    image = make_jpeg(color=(90, 110, 160), text=f"{m['type']} {m['station_id']}")
    resp = requests.post(f"{server.url}/api/alerts", headers={"Authorization": f"Bearer {token}"},
                         files={"meta": (None, json.dumps(m)), "image": ("e.jpg", image, "image/jpeg")}, timeout=5)
    assert resp.status_code == 201, resp.text
    return m["alert_id"]


def test_login_live_alert_filter_and_acknowledge(driver, live_server, sqlite_tokens):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(driver, 10)
    login(live_server.app.test_client(), "admin")  # creates the admin account
    requests.post(f"{live_server.url}/api/stations/desk-01/status", json={"fps": 14.8, "recognizer_connected": True,
                  "login_name": "alice", "faces": 1}, headers={"Authorization": f"Bearer {sqlite_tokens.desk01}"}, timeout=5)
    first = _post(live_server, sqlite_tokens.service, station_id="desk-02", login_name="bob", type="no_face")

    driver.get(f"{live_server.url}/")
    wait.until(EC.presence_of_element_located((By.ID, "login-form")))
    driver.find_element(By.ID, "username").send_keys("admin")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login-button").click()
    wait.until(EC.presence_of_element_located((By.ID, f"alert-{first}")))
    assert "online" in driver.find_element(By.ID, "station-desk-01").text
    wait.until(EC.text_to_be_present_in_element((By.ID, "live-state"), "live"))

    # A new alert arrives without a reload: a marker set on this page survives.
    driver.execute_script("window.__noReload = 'still here';")
    live = _post(live_server, sqlite_tokens.desk01, type="unknown_face", details={"distance": 0.74})
    row = wait.until(EC.presence_of_element_located((By.ID, f"alert-{live}")))
    assert driver.execute_script("return window.__noReload;") == "still here"
    assert "unknown face" in row.text and "alice" in row.text
    rows = driver.find_elements(By.CSS_SELECTOR, "#alerts-body tr.alert-row")
    assert rows[0].get_attribute("id") == f"alert-{live}", "newest first"
    thumb = row.find_element(By.CSS_SELECTOR, "td.thumb img")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0;", thumb))
    assert row.find_element(By.CSS_SELECTOR, "td.thumb a").get_attribute("href").endswith(f"/api/alerts/{live}/image")

    # Filter by type: only unknown_face rows remain, and a live no_face alert stays out.
    Select(driver.find_element(By.ID, "filter-type")).select_by_value("unknown_face")
    driver.find_element(By.ID, "apply-filters").click()
    wait.until(EC.url_contains("type=unknown_face"))
    wait.until(EC.text_to_be_present_in_element((By.ID, "live-state"), "live"))
    assert not driver.find_elements(By.ID, f"alert-{first}")
    other = _post(live_server, sqlite_tokens.service, station_id="desk-03", type="no_face")
    matching = _post(live_server, sqlite_tokens.service, station_id="desk-03", login_name="carol", type="unknown_face")
    wait.until(EC.presence_of_element_located((By.ID, f"alert-{matching}")))
    assert not driver.find_elements(By.ID, f"alert-{other}")
    assert {r.get_attribute("data-type") for r in driver.find_elements(By.CSS_SELECTOR, "#alerts-body tr.alert-row")} == {"unknown_face"}

    # Acknowledge with a comment: who and the comment are shown, and the filter is kept.
    row = driver.find_element(By.ID, f"alert-{live}")
    row.find_element(By.NAME, "comment").send_keys("Invigilator checked: visitor from IT")
    row.find_element(By.CSS_SELECTOR, ".ack-form button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, f"alert-{live}"), "Invigilator checked"))
    acked = driver.find_element(By.ID, f"alert-{live}")
    assert "✓ admin" in acked.text and "state-acknowledged" in acked.get_attribute("class")
    assert "type=unknown_face" in driver.current_url
    driver.save_screenshot(SCREENSHOT)
