"""`POST /api/enrolment-codes/redeem {"code": "7KQ2-M9XD-PAWE"}`: a desk trades its single-use code for its edge env
file (dashboard.enrolment_codes). No bearer token: the code is the credential. 200 {station_id, env}; 400 malformed;
404 unknown; 410 used, voided or expired, each with a sentence saying what to do."""
from __future__ import annotations

import logging

from flask import Blueprint, abort, jsonify, request

from dashboard import enrolment_codes
from dashboard.api_requests import json_object
from dashboard.services import services

log = logging.getLogger(__name__)
bp = Blueprint("enrolment_code_api", __name__)
_STATUS = {"malformed": 400, "unknown": 404, "used": 410, "voided": 410, "expired": 410}


@bp.post("/api/enrolment-codes/redeem")
def redeem():  # noqa: ANN201
    body = json_object()
    address = request.remote_addr or ""
    try:
        with services().writer() as db:  # one short write transaction: claim, token, audit
            done = enrolment_codes.redeem(db, body.get("code"), address)
    except enrolment_codes.CodeRefused as exc:
        log.warning("enrolment code from %s refused: %s", address, exc.why)
        abort(_STATUS[exc.why], exc.reason)
    log.info("enrolment code redeemed for station %s from %s", done.station, address)
    return jsonify(station_id=done.station, env=done.env)
