"""Shared-token mode (closed lab): made-up station ids cannot fill every slot, a desk's id cannot be squatted, and
it does not start on a network address without saying so. A real recognizer on 127.0.0.x, raw protocol clients."""
from __future__ import annotations

import shutil
import socket
import time

import pytest

from recognizer.app import RecognizerApp, RecognizerSettings
from recognizer.server.stations import ServerConfig
from recognizer.server.trust import TrustConfig
from recognizer.settings import build_parser
from recognizer.vision.detect import EngineConfig
from recognizer.station.pipeline import PipelineConfig
from shared import protocol
from shared.config import ConfigError
from shared.protocol import MessageKind
from shared.stream import MessageStream

pytestmark = [pytest.mark.timeout(120)]
TOKEN = "shared-lab-token"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, sample_index_dir):  # noqa: ANN201
    tmp = tmp_path_factory.mktemp("shared")
    shutil.copytree(sample_index_dir, tmp / "encodings")
    app = RecognizerApp(RecognizerSettings(
        engine=EngineConfig(detector="hog"),
        server=ServerConfig(host="127.0.0.1", port=0, token=TOKEN, idle_timeout_s=10, heartbeat_s=2, max_stations=32),
        pipeline=PipelineConfig(liveness=False),
        trust=TrustConfig(station_auth="shared", enrol_policy="open"),
        index_dir=tmp / "encodings", known_faces=tmp / "known_faces", workers=1,
    ))
    app.start()
    yield app
    app.stop()


def claim(app: RecognizerApp, station: str, source: str) -> tuple[MessageStream, protocol.Message]:
    stream = MessageStream(socket.create_connection(app.server.address, timeout=10, source_address=(source, 0)))
    stream.send(protocol.hello(station, "alice", TOKEN))
    return stream, stream.recv()


def alive(stream: MessageStream) -> bool:
    try:
        stream.send(protocol.heartbeat(3.0))
        reply = stream.recv()
    except OSError:
        return False
    return reply is not None and reply.kind == MessageKind.HEARTBEAT


def test_made_up_ids_from_one_address_cannot_fill_every_slot(lab):
    fakes, codes = [], []
    for i in range(32):  # what filled all 32 slots before: the real desk was refused server_full
        stream, reply = claim(lab, f"fake-{i:02d}", "127.0.0.2")
        codes.append(reply.header.get("code") if reply.kind == MessageKind.REFUSE else "welcome")
        fakes.append(stream)
    try:
        cap = lab.settings.server.max_stations_per_address
        assert codes.count("welcome") == cap and codes.count("address_full") == 32 - cap, codes
        desk, reply = claim(lab, "desk-07", "127.0.0.3")
        assert reply.kind == MessageKind.WELCOME, reply.header
        assert alive(desk)
        desk.close()
    finally:
        for s in fakes:
            s.close()


def test_a_desk_id_cannot_be_squatted(lab):
    desk, reply = claim(lab, "desk-09", "127.0.0.5")  # the real desk, first
    assert reply.kind == MessageKind.WELCOME
    desk.close()  # a network blip: the server notices the hang-up (on a loaded machine, not at once)
    gone_by = time.monotonic() + 10
    while any(s.station == "desk-09" for s in lab.server.stations()) and time.monotonic() < gone_by:
        time.sleep(0.02)
    squat, reply = claim(lab, "desk-09", "127.0.0.6")  # someone takes its id meanwhile and keeps it alive
    assert reply.kind == MessageKind.WELCOME
    assert alive(squat)
    desk, reply = claim(lab, "desk-09", "127.0.0.5")  # the real desk comes back from its own address: it wins
    assert reply.kind == MessageKind.WELCOME, reply.header
    assert alive(desk)
    assert not alive(squat)  # the squatter was closed
    again, reply = claim(lab, "desk-09", "127.0.0.6")  # and cannot take it back
    assert reply.kind == MessageKind.REFUSE and reply.header["code"] == "station_in_use"
    again.close()
    squat.close()
    desk.close()


def test_shared_mode_refuses_a_network_address_without_the_flag():
    def settings(*argv: str) -> RecognizerSettings:
        made = RecognizerSettings.from_args(build_parser().parse_args(list(argv)))
        made.check_exposure()  # what RecognizerApp.start() does before it listens
        return made

    with pytest.raises(ConfigError, match="allow-shared-token-on-network"):
        settings("--token", "t")  # the default --host 0.0.0.0, no dashboard: shared on the network
    assert settings("--token", "t", "--allow-shared-token-on-network").trust.allow_shared_on_network
    assert settings("--token", "t", "--host", "127.0.0.1").trust.station_auth == "shared"
    with_dashboard = settings("--host", "0.0.0.0", "--dashboard-url", "http://127.0.0.1:5000", "--dashboard-token", "x")
    assert with_dashboard.trust.station_auth == "dashboard"  # per-station credentials: the default with a dashboard
