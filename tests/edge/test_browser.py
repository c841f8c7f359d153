"""The edge page in a real headless Chromium: live feed, offline state, Capture answers."""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

from edge.config import EdgeConfig
from edge.runtime import Edge
from tests.edge.conftest import TOKEN, FakeRecognizer, MjpegServer, photo_frames
from tests.procs import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOTS = Path(tempfile.gettempdir())
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def browser(chromium) -> Iterator[object]:
    yield chromium


def _started_edge(source: str, server: FakeRecognizer, station: str) -> Edge:
    """An edge of `station` (login alice) reading `source`, connected to the running fake recognizer `server`."""
    edge = Edge(EdgeConfig(source=source, recognizer_port=server.port, station=station, login="alice", token=TOKEN,
                           web_port=0))
    edge.start()
    return edge


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
        browser.get(f"http://127.0.0.1:{edge.server.port}/")
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
        # the enrolled face is shown for the operator to check (the fake recognizer's crop: half the frame)
        assert browser.find_element(By.ID, "capture-crop").is_displayed()
        assert browser.execute_script("return document.getElementById('capture-crop-img').naturalWidth") == 320
        assert "check this is the right face" in browser.find_element(By.ID, "capture-crop-text").text
        faces = browser.find_element(By.ID, "faces").text
        assert "alice" in faces and "live (blinked)" in faces
        browser.save_screenshot(str(SCREENSHOTS / "facemon_edge_online.png"))
        browser.find_element(By.ID, "name").send_keys(" Byron")  # the next action clears the old answer
        assert browser.find_element(By.ID, "capture-answer").text == ""
        assert not browser.find_element(By.ID, "capture-crop").is_displayed()
    finally:
        edge.stop()
        server.kill()


def test_capture_of_a_lookalike_needs_a_deliberate_confirmation(browser, clip: Path) -> None:
    """Refused with who the face looks like and the face shown; only the second, explicit click enrols it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = FakeRecognizer().start()
    server.lookalike = "Lin"
    edge = Edge(EdgeConfig(source=str(clip), recognizer_port=server.port, station="desk-7", token=TOKEN, web_port=0))
    edge.start()
    wait = WebDriverWait(browser, 10)
    try:
        browser.get(f"http://127.0.0.1:{edge.server.port}/video_feed_page")
        wait.until(lambda d: d.find_element(By.ID, "link-badge").text == "recognizer online")
        browser.find_element(By.ID, "name").send_keys("Test Evaluator")
        browser.find_element(By.ID, "capture").click()
        wait.until(lambda d: d.find_element(By.ID, "capture-answer").text.startswith("Not enrolled"))
        assert browser.find_element(By.ID, "capture-answer").text == "Not enrolled: looks like Lin (0.41)."
        confirm = browser.find_element(By.ID, "confirm-lookalike")
        assert confirm.is_displayed() and confirm.text == "Enrol as Test Evaluator anyway: I checked, this is not Lin"
        assert browser.find_element(By.ID, "capture-crop").is_displayed()  # the face in question
        assert "confirm_lookalike" not in server.enrols[-1]
        browser.save_screenshot(str(SCREENSHOTS / "facemon_edge_lookalike.png"))
        confirm.click()
        wait.until(lambda d: d.find_element(By.ID, "capture-answer").text.startswith("Enrolled"))
        assert server.enrols[-1]["confirm_lookalike"] == "Lin" and len(server.enrols) == 2
        assert not browser.find_element(By.ID, "confirm-lookalike").is_displayed()
    finally:
        edge.stop()
        server.kill()


def test_page_says_camera_lost_and_recovers(browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    camera = MjpegServer(photo_frames(), fps=10.0).start()
    server = FakeRecognizer().start()
    edge = _started_edge(camera.url, server, "desk-8")
    wait = WebDriverWait(browser, 15)
    try:
        browser.get(f"http://127.0.0.1:{edge.server.port}/video_feed_page")
        wait.until(lambda d: d.find_element(By.ID, "camera-badge").text == "camera ok")
        wait.until(lambda d: "alice" in d.find_element(By.ID, "faces").text)
        camera.kill()
        killed = time.monotonic()
        wait.until(lambda d: d.find_element(By.ID, "camera-badge").text == "camera lost")
        shown_after = time.monotonic() - killed
        wait.until(lambda d: d.find_element(By.ID, "feed-note").text.startswith("Camera lost since"))
        assert browser.find_element(By.ID, "faces").text == "none"  # no stale faces
        assert "lost" in browser.find_element(By.ID, "camera-badge").get_attribute("class")
        time.sleep(1.5)  # let the feed show the camera-lost card
        browser.save_screenshot(str(SCREENSHOTS / "facemon_edge_camera_lost.png"))
        # the picture is the camera-lost card (grey, with red text), not a black or frozen frame
        frame = edge.display.latest()
        card = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
        assert 30 < float(card.mean()) < 60 and edge.display_thread.mode == "camera_lost"
        camera.start()
        back = time.monotonic()
        wait.until(lambda d: d.find_element(By.ID, "camera-badge").text == "camera ok")
        wait.until(lambda d: "alice" in d.find_element(By.ID, "faces").text)
        log.warning("page: 'camera lost' %.1f s after the camera died; 'camera ok' and faces %.1f s after it came "
                    "back", shown_after, time.monotonic() - back)
    finally:
        edge.stop()
        server.kill()
        camera.kill()


def test_page_says_busy_not_offline_while_the_recognizer_is_slow_to_answer(browser, clip: Path) -> None:
    """Online but not answering for a moment (a Capture being enrolled, a loaded recognizer): the badge stays
    "recognizer online" and the feed note says busy, never "offline" beside it; it clears when answers resume."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = FakeRecognizer().start()
    edge = _started_edge(str(clip), server, "desk-7")
    wait = WebDriverWait(browser, 15)
    try:
        browser.get(f"http://127.0.0.1:{edge.server.port}/")
        wait.until(lambda d: d.find_element(By.ID, "link-badge").text == "recognizer online")
        wait.until(lambda d: d.find_element(By.ID, "feed-note").text == "")
        server.delay_s = 4.0  # each frame now takes 4 s to answer; heartbeats are still answered at once
        wait.until(lambda d: "busy" in d.find_element(By.ID, "feed-note").text)
        note = browser.find_element(By.ID, "feed-note").text
        assert note == "The recognizer is busy and has not answered for a moment: showing the raw camera feed."
        assert browser.find_element(By.ID, "link-badge").text == "recognizer online"
        browser.save_screenshot(str(SCREENSHOTS / "facemon_edge_busy.png"))
        server.delay_s = 0.0
        wait.until(lambda d: d.find_element(By.ID, "feed-note").text == "")
        assert browser.find_element(By.ID, "link-badge").text == "recognizer online"
    finally:
        edge.stop()
        server.kill()
