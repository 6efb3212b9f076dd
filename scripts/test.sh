#!/usr/bin/env bash
# The whole test suite, as CI runs it: build and install the package from its
# wheel (not editable, so the shipped migrations are what gets tested), then
# lint, type-check and run pytest against the installed copy.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(pwd)/${SAGA_TEST_VENV:-.venv-test}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q ".[test]"
# Rebuild from this tree even when the version number did not change.
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps .
# The suite must exercise the wheel's files, not this source tree (checked
# from another directory, since Python puts the current one on sys.path).
(cd / && "$venv/bin/python" - <<'PY'
import pathlib, saga_cli
from saga_cli.store.migrate import migrations_dir
package = pathlib.Path(saga_cli.__file__).resolve().parent
assert "site-packages" in str(package), f"saga_cli imported from {package}, not the wheel"
assert migrations_dir().is_relative_to(package), f"migrations not shipped: {migrations_dir()}"
print(f"testing the installed wheel at {package}")
PY
)
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$venv/bin/mypy"
# The pytest script (not `python -m pytest`) keeps this directory off sys.path.
# Three test processes (pytest-xdist): the tests mostly wait on subprocesses,
# fsyncs and sockets, so this halves the run on 2 cores; SAGA_TEST_PROCESSES=0 runs serially.
SAGA_EXPECT_INSTALLED=1 exec "$venv/bin/pytest" -n "${SAGA_TEST_PROCESSES:-3}" "$@"
