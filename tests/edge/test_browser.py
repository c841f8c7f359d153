"""The edge page in a real headless Chromium: live feed, offline state, Capture answers."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from edge.config import EdgeConfig
from edge.runtime import Edge
from tests.edge.conftest import TOKEN, FakeRecognizer, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOTS = Path(tempfile.gettempdir())


@pytest.fixture(scope="module")
def browser(chromium) -> Iterator[object]:
    yield chromium


def test_page_shows_feed_offline_state_and_capture_answers(browser, clip: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    edge = Edge(EdgeConfig(source=str(clip), recognizer_port=port, station="desk-7", login="alice", token=TOKEN,
                           web_port=0))
    edge.start()
    server = FakeRecognizer()
    server.port = port
    wait = WebDriverWait(browser, 10)
    try:
        browser.get(f"http://127.0.0.1:{edge.server.server_port}/")
        assert browser.current_url.endswith("/video_feed_page")
        wait.until(lambda d: d.execute_script("return document.getElementById('feed').naturalWidth") > 0)
        wait.until(lambda d: "offline" in d.find_element(By.ID, "link-text").text.lower())
        assert "raw camera feed" in browser.find_element(By.ID, "feed-note").text
        assert browser.find_element(By.ID, "link-badge").text == "recognizer offline"

        browser.find_element(By.ID, "name").send_keys("Ada Lovelace")
        browser.find_element(By.ID, "capture").click()
        wait.until(lambda d: d.find_element(By.ID, "capture-answer").text.startswith("Not enrolled"))
        assert "recognizer offline" in browser.find_element(By.ID, "capture-answer").text
        browser.save_screenshot(str(SCREENSHOTS / "facemon_edge_offline.png"))

        server.start()  # the recognizer comes up: the page recovers by itself
        wait.until(lambda d: d.find_element(By.ID, "link-badge").text == "recognizer online")
        wait.until(lambda d: d.find_element(By.ID, "feed-note").text == "")
        wait.until(lambda d: "alice" in d.find_element(By.ID, "faces").text)
        browser.find_element(By.ID, "capture").click()
        wait.until(lambda d: d.find_element(By.ID, "capture-answer").text.startswith("Enrolled"))
        assert browser.find_element(By.ID, "capture-answer").text == "Enrolled Ada Lovelace (1 image(s) on file)."
        assert browser.execute_script("return document.getElementById('feed').naturalWidth") == 640
        browser.save_screenshot(str(SCREENSHOTS / "facemon_edge_online.png"))
    finally:
        edge.stop()
        server.kill()
