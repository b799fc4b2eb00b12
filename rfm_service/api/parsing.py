"""Request parsing: webargs with a 400 for invalid input (SPEC §4) and a 415
for a body that is not JSON, plus the Blueprint class that uses it."""

from __future__ import annotations

from typing import Any

import flask
import flask_smorest
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import RequestEntityTooLarge

from .errors import fail

FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})


class RFMParser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400  # webargs says 422; the contract says 400

    def _raw_load_json(self, req: flask.Request) -> Any:
        # webargs silently ignores a non-JSON body; a form-encoded
        # {"as_of": ...} would then calculate for today without a word.
        if not is_json_request(req):
            # Also refuse an *empty* body of a type an HTML form on another
            # site can send: with the browser's cached Basic credentials it
            # would otherwise start a calculation (CSRF). JSON needs a CORS
            # preflight, which this API never grants.
            if _body(req) or req.mimetype in FORM_TYPES:
                fail(415, "the request body must be JSON (Content-Type: application/json)")
            return core.missing
        try:
            return core.parse_json(_body(req))
        except RecursionError:  # json.loads recurses once per level of nesting
            fail(400, "the request body is not valid JSON (nested too deeply)")

    def _handle_invalid_json_error(
        self, error: Exception, req: flask.Request, *args: Any, **kwargs: Any
    ) -> Any:
        fail(400, "the request body is not valid JSON")


def _body(req: flask.Request) -> bytes:
    data = req.get_data(cache=True)
    limit = req.max_content_length
    # A body without Content-Length (chunked; gunicorn sets
    # wsgi.input_terminated) is cut at the limit by werkzeug without an
    # error, and the cut-off JSON could even parse. One that reaches the
    # limit may have gone on: refuse it as too large.
    if req.content_length is None and limit is not None and len(data) >= limit:
        raise RequestEntityTooLarge()
    return data


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = RFMParser()
