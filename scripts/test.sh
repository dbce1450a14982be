#!/usr/bin/env bash
# Install everything (scripts/setup.sh), lint, and run the test suite on all cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The HTML report test renders in headless chromium (Debian's package); CI fails without it.
if ! command -v chromium >/dev/null && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
    >/dev/null 2>&1 || echo "could not install chromium: the HTML report test will fail" >&2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check graphport tests benchmarks
# The import contract of docs/DEVELOPING.md (pyproject.toml [tool.importlinter]).
.venv/bin/lint-imports --no-cache
status=0
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-auto}" "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
fi
exit "$status"
