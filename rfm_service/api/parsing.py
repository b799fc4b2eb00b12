"""Request parsing: webargs with a 400 for invalid input (SPEC §4) and a 415
for a body that is not JSON, plus the Blueprint class that uses it."""

from __future__ import annotations

from typing import Any

import flask
import flask_smorest
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from .errors import fail


class RFMParser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400  # webargs says 422; the contract says 400

    def _raw_load_json(self, req: flask.Request) -> Any:
        # webargs silently ignores a non-JSON body; a form-encoded
        # {"as_of": ...} would then calculate for today without a word.
        if not is_json_request(req):
            if req.get_data(cache=True):
                fail(415, "the request body must be JSON (Content-Type: application/json)")
            return core.missing
        return core.parse_json(req.get_data(cache=True))

    def _handle_invalid_json_error(
        self, error: Exception, req: flask.Request, *args: Any, **kwargs: Any
    ) -> Any:
        fail(400, "the request body is not valid JSON")


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = RFMParser()
