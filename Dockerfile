# One image for every service in docker-compose.yml: web (gunicorn),
# migrate (flask db upgrade), worker, beat and flower (celery).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLASK_APP=wsgi

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

# An unprivileged user; instance/ (the app's writable folder) and the beat
# schedule's folder are its own, and a new named volume on /var/lib/rfm
# starts with that ownership.
RUN useradd --system --uid 10001 --home-dir /app rfm \
    && install -d -o rfm -g rfm /app/instance /var/lib/rfm

COPY . .
# PYTHONDONTWRITEBYTECODE keeps the processes from writing bytecode, so it is
# written here once: otherwise every start (each `flask calculate-rfm`, each
# worker) compiles the app's modules again.
RUN python -m compileall -q rfm_service migrations wsgi.py worker.py

USER rfm
EXPOSE 8000 5555
# Threads (gthread): a sync worker is killed after --timeout (30 s) even while
# it streams a download, which cut a CSV export to a slow client short.
# No control socket: gunicorn 27 makes one under $HOME, which is /app here and
# not the rfm user's to write, so every start logged "[ERROR] Control server
# error"; nothing here uses it.
# --preload: the app is built once, before the workers fork (it opens no
# connection or thread while it is built). A configuration error then stops
# gunicorn with the one-line reason and exit status 3; with two workers
# building it, gunicorn 27 followed the reason with its own HaltServer
# traceback and exit status 1.
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", "--no-control-socket", "--preload", "wsgi:app"]
