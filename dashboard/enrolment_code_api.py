"""`POST /api/enrolment-codes/redeem {"code": "7KQ2-M9XD-PAWE"}`: a desk trades its single-use code for its edge env
file (dashboard.enrolment_codes). No bearer token: the code is the credential. 200 {station_id, env}; 400 malformed;
404 unknown; 410 used, voided or expired, each with a sentence saying what to do; 429 with Retry-After once an
address sent `sign_in_max_failures` unknown or mistyped codes (exponential delay, never a lock: shared.throttle;
a try is reserved before it is checked, so codes sent at once get no more checks)."""
from __future__ import annotations

import logging

from flask import Blueprint, abort, jsonify, request

from dashboard import enrolment_codes
from dashboard.api_requests import json_object
from dashboard.services import services
from shared.throttle import TooManyFailures

log = logging.getLogger(__name__)
bp = Blueprint("enrolment_code_api", __name__)
_STATUS = {"malformed": 400, "unknown": 404, "used": 410, "voided": 410, "expired": 410}


@bp.post("/api/enrolment-codes/redeem")
def redeem():  # noqa: ANN201
    body = json_object()
    address = request.remote_addr or ""
    svc = services()
    try:
        attempt = svc.code_throttle.begin(address)
    except TooManyFailures as exc:
        log.warning("enrolment code from %s refused unchecked: too many unknown codes, %d s to wait", address,
                    exc.retry_after)
        response = jsonify(error=f"too many unknown or mistyped enrolment codes from {address}: try again in "
                                 f"{exc.retry_after} s, and check the code against the printed list")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response, 429
    with attempt:
        try:
            with svc.writer() as db:  # one short write transaction: claim, token, audit
                done = enrolment_codes.redeem(db, body.get("code"), address)
        except enrolment_codes.CodeRefused as exc:
            if exc.why in ("unknown", "malformed"):  # what a guess looks like; a real code used twice is not
                attempt.failed()
            log.warning("enrolment code from %s refused: %s", address, exc.why)
            abort(_STATUS[exc.why], exc.reason)
        attempt.succeeded()
    log.info("enrolment code redeemed for station %s from %s", done.station, address)
    return jsonify(station_id=done.station, env=done.env)
