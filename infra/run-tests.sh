#!/usr/bin/env bash
# The test command: installs everything the tests need on a fresh machine,
# checks lint and formatting, and runs the whole suite against real services
# (PostgreSQL, Redis, SeaweedFS S3, SoftHSM2, OpenBao, dcmtk, Orthanc, Chromium).
# Extra arguments go to pytest. Under CI=true a missing service fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash infra/install-system-deps.sh
bash infra/start-local-services.sh

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .

mkdir -p test-artifacts
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
