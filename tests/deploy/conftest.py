"""Fixtures the deployment tests share with the serving tests: TF Serving's test models."""

from tests.serving.conftest import testdata  # noqa: F401 (a fixture, used by name)
