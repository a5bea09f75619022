"""Which of OpenBLAS's kernel sets numpy's matrix products run, on CPUs where its own choice is
slower.

numpy's wheels ship OpenBLAS built for many CPUs at once: at load it picks a kernel set (a
*core type*) from the CPU's features, or the one named by the environment variable
``OPENBLAS_CORETYPE``. On AMD's Zen 4 (family 25 with AVX-512) it picks SkylakeX's AVX-512
kernels, which run slower there than its Haswell (AVX2) ones: Zen 4 executes 512-bit
instructions as two 256-bit halves. Single-threaded float32 products on 2026-12-05's AMD EPYC
(Zen 4, OpenBLAS 0.3.31), GFLOP/s SkylakeX -> Haswell, best of 7: 2048^3 103 -> 110,
512 x 4608 x 196 (a 3x3 convolution of 512 channels at 7 x 7) 98 -> 104, Winograd's 36
products of 64 x 64 x 256 90 -> 97, LeNet's InnerProduct (64 x 800 x 500) 78 -> 97. Whole nets
of ``tools/bench_nets.py``, forward + backward, paired rounds in one process (the core switched
between rounds), Haswell / SkylakeX time: MLP 0.94x, Deconvolution 0.94x, depthwise 0.96x,
AlexNet 0.97x, cifar10_quick, VGG, ResNet and LeNet 0.99x-1.00x. float64 products lose a
little (1024^3: 53 -> 51 GFLOP/s); the nets train in float32.

:func:`use_preferred_core` (``netlayers.parallel`` calls it once, before a net's first pass)
switches numpy's OpenBLAS to Haswell's kernels there, through OpenBLAS's exported start-up
functions (``gotoblas_dynamic_quit``, then ``gotoblas_dynamic_init``, which reads
``OPENBLAS_CORETYPE``). It sets ``OPENBLAS_CORETYPE`` in the environment to do so, so child
processes start with the same kernels. Every numpy product of the process then uses them;
results change in the last bits only. A user who set ``OPENBLAS_CORETYPE`` keeps that choice,
and nothing changes where numpy's BLAS is not such an OpenBLAS.
"""

import ctypes
import os

from .blas import numpy_blas_file

ENVIRONMENT_VARIABLE = "OPENBLAS_CORETYPE"
AVX512_CORES = ("SkylakeX", "Cooperlake", "SapphireRapids")  # OpenBLAS's AVX-512 kernel sets
ZEN_FAMILIES = {25: "Haswell"}  # AMD CPU family (Zen 3 and 4) -> the kernels to run there
CPUINFO = "/proc/cpuinfo"


def preferred_core(current, vendor, family, chosen_by_user):
    """The core type to switch OpenBLAS to, or None to keep ``current`` (its core type now):
    Haswell in place of an AVX-512 set on an AMD CPU of family 25 (Zen 4; Zen 3 has no
    AVX-512), unless the user chose the core type (``chosen_by_user``)."""
    if chosen_by_user or current not in AVX512_CORES or vendor != "AuthenticAMD":
        return None
    return ZEN_FAMILIES.get(family)


def cpu_vendor_and_family(path=CPUINFO):
    """(vendor id, CPU family) of the first processor in ``path`` (Linux's /proc/cpuinfo), or
    (None, None) where it cannot be read."""
    vendor = family = None
    try:
        with open(path) as lines:
            for line in lines:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "vendor_id" and vendor is None:
                    vendor = value
                elif key == "cpu family" and family is None and value.isdigit():
                    family = int(value)
                if vendor is not None and family is not None:
                    break
    except OSError:
        pass
    return vendor, family


class OpenBlasCores:
    """numpy's OpenBLAS, where it can switch kernel sets (a build for many CPUs that exports
    its start-up functions): ``current()`` names the set in use, ``switch(name)`` changes it."""

    def __init__(self, library):
        self.corename = library.gotoblas_corename
        self.corename.restype = ctypes.c_char_p
        self.quit, self.init = library.gotoblas_dynamic_quit, library.gotoblas_dynamic_init

    @classmethod
    def of_numpy(cls):
        """numpy's OpenBLAS, or None (another BLAS, a build for one CPU, no such library)."""
        path = numpy_blas_file()
        if path is None or "openblas" not in os.path.basename(path).lower():
            return None
        try:
            library = ctypes.CDLL(path)
            return cls(library)
        except (OSError, AttributeError):
            return None

    def current(self):
        return self.corename().decode()

    def switch(self, name):
        """Start OpenBLAS again with kernel set ``name`` (``OPENBLAS_CORETYPE`` set to it); no
        product may be running meanwhile. Returns the set now in use (OpenBLAS keeps its own
        choice for a name it does not know)."""
        os.environ[ENVIRONMENT_VARIABLE] = name
        self.quit()
        self.init()
        return self.current()


def use_preferred_core():
    """Switch numpy's OpenBLAS to :func:`preferred_core`'s kernels where that applies. Returns
    the core type switched to, or None when nothing changed."""
    cores = OpenBlasCores.of_numpy()
    if cores is None:
        return None
    current = cores.current()
    target = preferred_core(current, *cpu_vendor_and_family(), ENVIRONMENT_VARIABLE in os.environ)
    if target is None:
        return None
    if cores.switch(target) != target:
        cores.switch(current)
        return None
    return target
