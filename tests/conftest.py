"""Suite-wide checks.

CI installs the dev extras, torch and transformers included, so that the tests on real exported
models run there. A CI run where they are missing would only skip those tests and still pass:
under CI (the CI environment variable set) a missing torch or transformers is an error instead."""

import importlib.util
import os

import pytest


def pytest_sessionstart(session):
    if os.environ.get("CI"):
        missing = [m for m in ("torch", "transformers", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            pytest.exit(f"CI: {', '.join(missing)} not installed; `pip install -e '.[dev]'` installs them", 2)
