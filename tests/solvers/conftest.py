"""Every solver test runs in its own temporary folder, so nothing lands in the checkout."""

import pytest


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
