"""The face library in a real headless Chromium (Debian's), by mouse and by keyboard: enrol by upload, see a
wrong photo flagged and remove it, rename, then the review queue (assign, a stranger, not <person>) and search.
Screenshots of each page go to $FACEMON_SCREENSHOTS (default: <tmp>/facemon-library)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.conftest import launch_chromium
from tests.dashboard.conftest import PASSWORD, login
from tests.library.conftest import ALEX, BIDEN, OBAMA, OBAMA2, face_body, face_of

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(os.environ.get("FACEMON_SCREENSHOTS") or Path(tempfile.gettempdir()) / "facemon-library")

UNLABELLED = """return [...document.querySelectorAll('input:not([type=hidden]), select')]
  .filter(e => !(e.id && document.querySelector('label[for="' + e.id + '"]')) && !e.closest('label')).map(e => e.name);"""


@pytest.fixture
def driver() -> Iterator[object]:
    drv, profile = launch_chromium("1300,1000")
    drv.implicitly_wait(0)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _tab_through(driver, presses: int) -> list[str]:  # noqa: ANN001
    """The ids of the elements Tab focuses, from the top of the page once round, each checked for a visible focus outline."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);")
    out = []
    for _ in range(presses):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        el = driver.switch_to.active_element
        ident = el.get_attribute("id")
        if ident in out:
            break  # round the page once
        if ident:
            out.append(ident)
            style = driver.execute_script("const s = getComputedStyle(arguments[0]); return [s.outlineStyle, s.outlineWidth];", el)
            assert style[0] != "none" and style[1] != "0px", (ident, style)
    return out


def _shot(driver, name: str) -> None:  # noqa: ANN001
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def test_library_by_mouse_and_keyboard(driver, live_server, sqlite_tokens, engine) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 30)  # the first upload loads the face engine
    login(live_server.app.test_client(), "admin")
    url = live_server.url
    driver.get(f"{url}/library/people")
    driver.find_element(By.ID, "username").send_keys("admin")
    driver.find_element(By.ID, "password").send_keys(PASSWORD + Keys.ENTER)  # keyboard: Enter submits
    wait.until(EC.presence_of_element_located((By.ID, "add-person-form")))
    assert driver.execute_script(UNLABELLED) == []

    # enrol a new person by upload, then two more photos, one of them someone else
    driver.find_element(By.ID, "new-name").send_keys("obama")
    driver.find_element(By.ID, "new-photo").send_keys(str(OBAMA))
    driver.find_element(By.ID, "add-person").click()
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.flash"), "Added: enrolled obama"))
    for photo in (OBAMA2, BIDEN):
        driver.find_element(By.ID, "photo").send_keys(str(photo))
        button = driver.find_element(By.ID, "add-photo")
        button.click()
        wait.until(EC.staleness_of(button))  # the page before still says "Added": wait for the new one
        wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.flash"), "Added"))
    flagged = driver.find_elements(By.CSS_SELECTOR, "tr.far")
    assert len(flagged) == 1 and "ageitgey_biden.jpg" in flagged[0].text and "far from the other photos" in flagged[0].text
    assert driver.execute_script(UNLABELLED) == []
    _shot(driver, "library-person")
    flagged[0].find_element(By.CSS_SELECTOR, "button.danger").click()
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.flash"), "Removed one photo of obama"))
    assert not driver.find_elements(By.CSS_SELECTOR, "tr.far") and len(driver.find_elements(By.CSS_SELECTOR, "#photos tbody tr")) == 2
    # rename by keyboard only: the field, its text replaced, Enter
    field = driver.find_element(By.ID, "new_name")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("barack" + Keys.ENTER)
    wait.until(EC.text_to_be_present_in_element((By.ID, "person-name"), "barack"))
    driver.get(f"{url}/library/people")
    assert driver.find_element(By.ID, "person-barack") and driver.find_element(By.ID, "people-count").text == "1"
    _shot(driver, "library-people")

    # the review queue: Obama twice (one group), Biden not-sure of alex, alex enrolled
    driver.get(f"{url}/library/people")
    driver.find_element(By.ID, "new-name").send_keys("alex")
    driver.find_element(By.ID, "new-photo").send_keys(str(ALEX))
    driver.find_element(By.ID, "add-person").click()
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.flash"), "Added"))
    h = {"Authorization": f"Bearer {sqlite_tokens.service}"}
    ob1, ob2, bi = face_of(engine, OBAMA), face_of(engine, OBAMA2), face_of(engine, BIDEN)
    post = lambda body: requests.post(f"{url}/api/review/faces", json=body, headers=h, timeout=10).json()["group"]  # noqa: E731
    g_obama = post(face_body(*ob1))
    assert post(face_body(*ob2, station_id="desk-07")) == g_obama
    g_biden = post(face_body(*bi, verdict="unsure", candidate="alex", distance=0.57))
    g_other = post(face_body(*bi, station_id="desk-03", track=4))
    assert g_other == g_biden  # the same face again joins its group
    driver.get(f"{url}/library/review")
    assert driver.find_element(By.ID, "group-count").text == "2 groups"
    assert driver.execute_script(UNLABELLED) == []
    _shot(driver, "library-review")
    # every action of every group is reached with Tab alone, in page order, each with a visible focus outline
    reached = _tab_through(driver, 60)
    wanted = [f"assign-{g_obama}", f"assign-button-{g_obama}", f"stranger-{g_obama}",
              f"assign-{g_biden}", f"assign-button-{g_biden}", f"stranger-{g_biden}", f"not-{g_biden}-alex"]
    assert [i for i in reached if i in wanted] == sorted(wanted, key=reached.index) and set(wanted) <= set(reached), reached
    # "this is barack" by keyboard: type the name, Enter
    driver.find_element(By.ID, f"assign-{g_obama}").send_keys("barack" + Keys.ENTER)
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.flash"), "Added 2 face(s) to barack"))
    # "not alex": the button reached and pressed from the keyboard
    button = driver.find_element(By.ID, f"not-{g_biden}-alex")
    driver.execute_script("arguments[0].focus();", button)
    assert driver.switch_to.active_element == button
    button.send_keys(Keys.ENTER)
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.flash"), "NOT alex"))
    assert driver.find_elements(By.ID, "queue-empty")
    # a stranger: a new face, dismissed
    g_new = post(face_body(*bi, station_id="desk-09", track=8, alert_id="a" * 32))
    driver.get(f"{url}/library/review")
    driver.find_element(By.ID, f"stranger-{g_new}").click()
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.flash"), "as a stranger"))
    driver.get(f"{url}/library/people/alex")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#negatives tbody tr")) == 1  # the same crop twice is kept once

    # search: by person, then by likeness to a photo
    driver.get(f"{url}/library/search?person=barack")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#hits tbody tr td.thumb")) == 2
    driver.find_element(By.ID, "search-photo").send_keys(str(BIDEN))
    by_person = driver.find_element(By.ID, "hits")
    driver.find_element(By.ID, "search-by-likeness").click()
    wait.until(EC.staleness_of(by_person))  # the person search's page is gone (its #hits satisfied the wait)
    wait.until(EC.presence_of_element_located((By.ID, "hits")))
    rows = driver.find_elements(By.CSS_SELECTOR, "#hits tbody tr")
    assert len(rows) == 3 and "desk-01" in driver.find_element(By.ID, "hits").text
    assert driver.execute_script(UNLABELLED) == []
    _shot(driver, "library-search")


def test_this_is_a_lookalike_needs_the_confirm_on_the_review_page(driver, live_server, sqlite_tokens, engine) -> None:  # noqa: F811
    """ "This is lin" for a face that looks like alex (enrolled): refused with the reason, the group's card then offers
    the deliberate confirmation (focused: Enter confirms); confirmed, it is added and audited as confirmed."""
    import sqlalchemy as sa
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from dashboard.library_models import AuditEntry, ReviewFace
    from dashboard.services import services
    from tests.library.conftest import REPO

    app, url = live_server.app, live_server.url
    login(app.test_client(), "admin")
    wait = WebDriverWait(driver, 30)
    driver.get(f"{url}/library/people")
    driver.find_element(By.ID, "username").send_keys("admin")
    driver.find_element(By.ID, "password").send_keys(PASSWORD + Keys.ENTER)
    driver.find_element(By.ID, "new-name").send_keys("alex")
    wait.until(EC.presence_of_element_located((By.ID, "new-photo"))).send_keys(str(ALEX))
    driver.find_element(By.ID, "add-person").click()
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.flash"), "Added"))
    h = {"Authorization": f"Bearer {sqlite_tokens.service}"}
    alex2 = face_of(engine, REPO / "known_faces" / "alex_lacamoire" / "ageitgey_alex-lacamoire.png")
    group = requests.post(f"{url}/api/review/faces", json=face_body(*alex2), headers=h, timeout=10).json()["group"]
    driver.get(f"{url}/library/review")
    assert not driver.find_elements(By.ID, f"confirm-{group}"), "no confirm control before a refusal"
    driver.find_element(By.ID, f"assign-{group}").send_keys("lin" + Keys.ENTER)
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.flash"), "looks like alex"))
    button = wait.until(EC.presence_of_element_located((By.ID, f"confirm-{group}")))
    assert "looks like alex" in driver.find_element(By.ID, f"confirm-text-{group}").text
    assert driver.switch_to.active_element == button, "the confirm button has the focus: Enter confirms"
    assert driver.execute_script(UNLABELLED) == []
    _shot(driver, "library-review-lookalike")
    with services(app).sessions() as db:
        assert db.scalar(sa.select(ReviewFace.state)) == "queued", "refused: still queued"
    button.send_keys(Keys.ENTER)
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.flash"), "Added 1 face(s) to lin"))
    assert not driver.find_elements(By.ID, f"confirm-{group}")
    with services(app).sessions() as db:
        assert db.scalar(sa.select(ReviewFace.state)) == "assigned"
        entry = db.scalars(sa.select(AuditEntry).where(AuditEntry.action == "assign")).one()
    assert entry.subject == "lin" and entry.actor == "admin" and "lookalike of alex confirmed" in entry.detail
    # a forged confirmation of someone else does not carry over (the Enroller checks it is exactly that lookalike)
    g2 = requests.post(f"{url}/api/review/faces", json=face_body(*alex2, track=2), headers=h, timeout=10).json()["group"]
    driver.get(f"{url}/library/review?confirm={g2}&person=kit&like=obama")
    driver.find_element(By.ID, f"confirm-{g2}").send_keys(Keys.ENTER)
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.flash"), "Refused"))
    with services(app).sessions() as db:
        assert db.scalar(sa.select(ReviewFace.state).where(ReviewFace.group_id == g2)) == "queued"
