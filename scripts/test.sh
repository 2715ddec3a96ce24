#!/usr/bin/env bash
# The test command: set up (idempotent), install headless Chromium for the HTML report test if
# it is missing and apt can install it, then run the suite on every core.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed; the browser test will be skipped"
fi
exec .venv/bin/python -m pytest -n auto --dist loadgroup -p no:cacheprovider "$@"
