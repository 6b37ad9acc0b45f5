"""Fixtures of the package's tests: an empty root and a small payload."""

import os

import pytest


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def src(tmp_path):
    s = tmp_path / "src"
    (s / "sub").mkdir(parents=True)
    (s / "adapter_model.safetensors").write_bytes(os.urandom(65536))
    (s / "adapter_config.json").write_text('{"r": 8}')
    (s / "sub" / "extra.bin").write_bytes(b"x" * 10)
    return s
