"""Shared fixtures: real sample photos, a real face engine, a real recognizer on 127.0.0.1:0."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
from pathlib import Path

import pytest

from tests import proctree as procs

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
KNOWN_FACES = REPO / "known_faces"
SAMPLE_CLIP = REPO / "samples" / "hamilton_clip.mp4"
DATA = Path(os.environ.get("FACEMON_DATA", REPO.parent / "shared" / "data"))


LEFTOVER_GRACE_S = 15.0  # time the session's children get to exit after the last test


def pytest_configure(config: pytest.Config) -> None:
    """Mark this session's environment so every process it starts (and their children) can be found at the end."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None and procs.PROC.is_dir():
        os.environ[procs.MARKER] = secrets.token_hex(8)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a process started by the tests outlives them; list and end those processes."""
    token = os.environ.get(procs.MARKER)
    if token is None or os.environ.get("PYTEST_XDIST_WORKER") is not None:
        return
    left = procs.wait_gone(lambda: procs.marked(token), LEFTOVER_GRACE_S)
    if not left:
        return
    lines = [f"  pid {pid}: {procs.cmdline(pid)[:200]}" for pid in left]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    text = (f"{len(left)} process(es) started by this test session were still running {LEFTOVER_GRACE_S:.0f} s "
            "after the last test (now killed):\n" + "\n".join(lines))
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "leftover processes", red=True)
        reporter.write_line(text)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data (not redistributable); tests that need it skip when it is absent."""
    if not (DATA / "README.md").exists():
        pytest.skip(f"test data not found at {DATA} (set FACEMON_DATA); skipped")
    return DATA


@pytest.fixture(scope="session")
def engine():
    from recognizer.vision.detect import FaceEngine

    return FaceEngine()


@pytest.fixture(scope="session")
def sample_index_dir(tmp_path_factory, engine) -> Path:
    """The shipped known_faces/ built into an index once per test session."""
    from recognizer.identity.enrol import build_index
    from recognizer.identity.index import save_index

    out = tmp_path_factory.mktemp("index")
    index, skipped = build_index(engine, KNOWN_FACES)
    assert not skipped, skipped
    save_index(index, out)
    return out


@pytest.fixture
def index_copy(tmp_path, sample_index_dir) -> Path:
    """A private copy of the sample index that a test may change."""
    dst = tmp_path / "encodings"
    shutil.copytree(sample_index_dir, dst)
    return dst


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory, sample_index_dir):
    """A real recognizer server (worker processes included) on an ephemeral loopback port."""
    from recognizer.app import RecognizerApp, RecognizerSettings
    from recognizer.vision.detect import EngineConfig
    from recognizer.server.stations import ServerConfig
    from recognizer.server.trust import TrustConfig

    tmp = tmp_path_factory.mktemp("recognizer")
    shutil.copytree(sample_index_dir, tmp / "encodings")
    settings = RecognizerSettings(
        engine=EngineConfig(detector="hog"),  # HOG only: no sweep process
        server=ServerConfig(host="127.0.0.1", port=0, token="secret", idle_timeout_s=10, heartbeat_s=2, index_poll_s=0.2),
        # a closed-lab recognizer: enrolment without grants (tests/trust covers the grant policy)
        trust=TrustConfig(station_auth="shared", enrol_policy="open"),
        index_dir=tmp / "encodings",
        known_faces=tmp / "known_faces",
        workers=1,
    )
    app = RecognizerApp(settings)
    app.start()
    yield app
    app.stop()


def launch_chromium(window: str = "1280,800"):
    """Debian's headless Chromium under Selenium, with a throw-away profile; skips when not installed.

    Returns (driver, profile_dir); the caller quits the driver and removes the profile (see `chromium`).
    """
    import tempfile

    chromedriver = shutil.which("chromedriver")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromedriver or not binary:
        pytest.skip("Debian chromium + chromium-driver not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    profile = tempfile.mkdtemp(prefix="facemon-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # the machine's network is closed: without the background-networking flags Chromium keeps dialling out
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--window-size={window}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(20)
    return driver, profile


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium per test module."""
    driver, profile = launch_chromium()
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
