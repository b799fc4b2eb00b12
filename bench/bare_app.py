"""The framework's ceiling: a bare Flask app with one endpoint returning a
constant JSON object, served by gunicorn with the same settings as the
service (``gunicorn bench.bare_app:app``)."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def constant() -> dict[str, str]:
    return {"status": "ok"}
