"""Test-wide settings: notebooks and training runs started by the tests write into a
temporary folder, never over the committed reports, models or checkpoints."""
import os
import tempfile


def pytest_configure(config):
    scratch = tempfile.mkdtemp(prefix="metalearn-tests-")
    os.environ["METALEARN_STAGING"] = os.path.join(scratch, "outputs")
    os.environ["METALEARN_WORK"] = os.path.join(scratch, "work")
