#!/usr/bin/env bash
# Make sure the local PostgreSQL (127.0.0.1:5432, trust auth) and Redis
# (127.0.0.1:6379) the tests talk to are running: start them if installed
# but stopped, install them with apt-get if missing.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_updated=""

apt_install() {
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # wait_for NAME CMD...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "ensure-services: $name did not come up" >&2
  return 1
}

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432; }

# --- PostgreSQL --------------------------------------------------------------
if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  echo "ensure-services: installing PostgreSQL with apt-get"
  apt_install postgresql
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # A test-only server on loopback: trust local connections, as the tests expect.
  $SUDO sed -i -E 's/^(local|host)(\s+all\s+all\s+.*)\s(peer|scram-sha-256|md5)$/\1\2 trust/' "$hba"
  $SUDO sed -i -E 's/^(local\s+all\s+postgres\s+)peer$/\1trust/' "$hba"
fi
if ! pg_ready; then
  for version in $(ls /etc/postgresql); do
    echo "ensure-services: starting PostgreSQL $version"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  wait_for PostgreSQL pg_ready
fi

# --- Redis -------------------------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1; then
  echo "ensure-services: installing Redis with apt-get"
  apt_install redis-server
fi
redis_ready() { redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG; }
if ! redis_ready; then
  echo "ensure-services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_for Redis redis_ready
fi
echo "ensure-services: PostgreSQL and Redis are up"

# --- Chromium (browser tests of the dashboard) ---------------------------------
# Debian's browser and its matching driver; the tests never download one.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "ensure-services: installing Chromium and ChromeDriver with apt-get"
  apt_install chromium chromium-driver fonts-dejavu-core
fi
echo "ensure-services: $(chromium --version 2>/dev/null | head -n 1), $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
