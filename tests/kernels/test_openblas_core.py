"""Choosing OpenBLAS's kernel set: the rule, the CPU facts it reads, and the switch itself."""

import os

import numpy as np
import pytest

from netlayers.kernels import openblas_core
from netlayers.kernels.openblas_core import OpenBlasCores, cpu_vendor_and_family, preferred_core


@pytest.mark.parametrize(
    "current, vendor, family, chosen, expected",
    [
        ("SkylakeX", "AuthenticAMD", 25, False, "Haswell"),  # Zen 4
        ("Cooperlake", "AuthenticAMD", 25, False, "Haswell"),
        ("SkylakeX", "AuthenticAMD", 25, True, None),  # the user's OPENBLAS_CORETYPE wins
        ("SkylakeX", "GenuineIntel", 6, False, None),  # Intel's AVX-512 runs full width
        ("SkylakeX", "AuthenticAMD", 26, False, None),  # Zen 5: not measured, left alone
        ("Haswell", "AuthenticAMD", 25, False, None),  # already AVX2
        ("Zen", "AuthenticAMD", 25, False, None),
        ("SkylakeX", None, None, False, None),  # no /proc/cpuinfo
    ],
)
def test_preferred_core(current, vendor, family, chosen, expected):
    assert preferred_core(current, vendor, family, chosen) == expected


def test_cpu_vendor_and_family_reads_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\n"
        "processor\t: 1\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n"
    )
    assert cpu_vendor_and_family(info) == ("AuthenticAMD", 25)
    assert cpu_vendor_and_family(tmp_path / "missing") == (None, None)


class FakeCores:
    def __init__(self, current, known=("SkylakeX", "Haswell")):
        self.now, self.known, self.calls = current, known, []

    def current(self):
        return self.now

    def switch(self, name):
        self.calls.append(name)
        if name in self.known:
            self.now = name
        return self.now


@pytest.fixture
def zen4(monkeypatch):
    monkeypatch.delenv(openblas_core.ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(openblas_core, "cpu_vendor_and_family", lambda: ("AuthenticAMD", 25))


def test_use_preferred_core_switches_on_zen4(zen4, monkeypatch):
    cores = FakeCores("SkylakeX")
    monkeypatch.setattr(OpenBlasCores, "of_numpy", classmethod(lambda cls: cores))
    assert openblas_core.use_preferred_core() == "Haswell"
    assert cores.calls == ["Haswell"]


def test_use_preferred_core_goes_back_when_the_switch_fails(zen4, monkeypatch):
    cores = FakeCores("SkylakeX", known=("SkylakeX",))
    monkeypatch.setattr(OpenBlasCores, "of_numpy", classmethod(lambda cls: cores))
    assert openblas_core.use_preferred_core() is None
    assert cores.calls == ["Haswell", "SkylakeX"] and cores.now == "SkylakeX"


def test_use_preferred_core_respects_the_users_choice(zen4, monkeypatch):
    monkeypatch.setenv(openblas_core.ENVIRONMENT_VARIABLE, "SkylakeX")
    cores = FakeCores("SkylakeX")
    monkeypatch.setattr(OpenBlasCores, "of_numpy", classmethod(lambda cls: cores))
    assert openblas_core.use_preferred_core() is None
    assert cores.calls == []


def test_switching_numpys_openblas_keeps_products_right(monkeypatch):
    """numpy's wheels ship OpenBLAS for many x86-64 CPUs: it can start again with another
    kernel set (Nehalem's run on any of them) and products stay right; then it goes back."""
    cores = OpenBlasCores.of_numpy()
    assert cores is not None, "numpy's BLAS is expected to be its wheel's OpenBLAS"
    monkeypatch.setenv(openblas_core.ENVIRONMENT_VARIABLE, os.environ.get(openblas_core.ENVIRONMENT_VARIABLE, ""))
    before = cores.current()
    other = "Prescott" if before == "Nehalem" else "Nehalem"
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((70, 90), dtype=np.float32), rng.standard_normal((90, 50), dtype=np.float32)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    try:
        assert cores.switch(other) == other
        np.testing.assert_allclose(a @ b, expected, rtol=1e-4, atol=1e-4)
    finally:
        cores.switch(before)
    assert cores.current() == before
    np.testing.assert_allclose(a @ b, expected, rtol=1e-4, atol=1e-4)
