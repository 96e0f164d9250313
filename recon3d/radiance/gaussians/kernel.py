"""Build and load recon3d's CPU Gaussian kernels (`_composite.cpp`, `_project.cpp`) through ctypes.

The library is compiled once per machine with the system C++ compiler (`$CXX`, default `g++`;
`-O3 -march=native`) into `$RECON3D_CACHE` (default `~/.cache/recon3d`), named by a hash of the source, the
flags and the compiler version, so an edited source or another compiler builds anew. The build writes to a
temporary file and renames it, so parallel processes never load a half-written library.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from recon3d.errors import StageError

SOURCES = tuple(Path(__file__).with_name(name) for name in ("_composite.cpp", "_project.cpp"))
FLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-fno-math-errno", "-pthread", "-shared", "-fPIC", "-std=c++17")

_P, _I, _I64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
_SIGNATURES = {
    "bin_gaussians": (_I64, [_I, _I, _I, _I, _P, _P, _P, _P, _P, _I64]),
    "composite_forward": (None, [_I] * 6 + [_P] * 11),
    "composite_backward": (None, [_I] * 6 + [_P] * 16),
    "project_sh": (_I64, [_I, _I64] + [_P] * 5 + [_I, _I, _P, _P, _I, _I] + [ctypes.c_float] * 3 + [_P] * 7),
    "depth_order": (None, [_I64, _P, _P]),
}


def cache_dir() -> Path:
    return Path(os.environ.get("RECON3D_CACHE", Path.home() / ".cache" / "recon3d"))


def _compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise StageError(f"the CPU Gaussian rasterizer needs a C++ compiler and {cxx!r} is not on PATH",
                         "install g++ (Debian: apt install g++), set CXX, or use rasterizer: reference")
    return cxx


def library_path() -> Path:
    """Where the built library for this source, compiler and machine lives (built or not)."""
    cxx = _compiler()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    h = hashlib.sha256(b"".join(src.read_bytes() for src in SOURCES))
    h.update(" ".join((cxx, *FLAGS, version, platform.machine(), platform.node())).encode())
    return cache_dir() / f"gaussians-{h.hexdigest()[:16]}.so"


def build() -> Path:
    """Compile the kernel unless this exact build exists; returns the library path."""
    target = library_path()
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [_compiler(), *FLAGS, *map(str, SOURCES), "-o", tmp]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        os.unlink(tmp)
        raise StageError(f"building the CPU Gaussian rasterizer failed: {' '.join(cmd)}\n{done.stderr[-2000:]}",
                         "check the compiler (g++, C++17), or use rasterizer: reference")
    os.replace(tmp, target)
    return target


@functools.cache
def load() -> ctypes.CDLL:
    """The kernel library, built on first use."""
    lib = ctypes.CDLL(str(build()))
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


if __name__ == "__main__":  # `python -m recon3d.radiance.gaussians.kernel` builds ahead of time
    print(build())
