"""Build and load recon3d's C++ CPU kernels (plain C ABI, called through ctypes).

A `Library` is compiled once per machine with the system C++ compiler (`$CXX`, default `g++`; `-O3
-march=native`, OpenMP: see `_parallel.h` for why) into `$RECON3D_CACHE` (default `~/.cache/recon3d`),
named by a hash of its sources, the flags and the compiler version, so an edited source or another compiler
builds anew. The build writes a temporary file and renames it, so parallel processes never load a
half-written library. No torch headers: a build takes seconds. `python -m recon3d.radiance.native` builds
every library ahead of time (`make install` does).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from recon3d.errors import StageError

FLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC",
         "-std=c++17")
P, I, I64, F32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float
HEADER = Path(__file__).with_name("_parallel.h")  # shared by every kernel source


def cache_dir() -> Path:
    return Path(os.environ.get("RECON3D_CACHE", Path.home() / ".cache" / "recon3d"))


def _compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise StageError(f"recon3d's CPU kernels need a C++ compiler and {cxx!r} is not on PATH",
                         "install g++ (Debian: apt install g++) or set CXX; for Gaussians, rasterizer: reference "
                         "needs none")
    return cxx


@dataclass
class Library:
    name: str
    sources: tuple[Path, ...]
    signatures: dict[str, tuple]  # function -> (restype, argtypes)
    _lib: ctypes.CDLL | None = field(default=None, repr=False)

    def path(self) -> Path:
        """Where the built library for these sources, this compiler and this machine lives (built or not)."""
        cxx = _compiler()
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
        h = hashlib.sha256(b"".join(src.read_bytes() for src in (*self.sources, HEADER)))
        h.update(" ".join((cxx, *FLAGS, version, platform.machine(), platform.node())).encode())
        return cache_dir() / f"{self.name}-{h.hexdigest()[:16]}.so"

    def build(self) -> Path:
        """Compile unless this exact build exists; returns the library path."""
        target = self.path()
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [_compiler(), *FLAGS, *map(str, self.sources), "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            os.unlink(tmp)
            raise StageError(f"building recon3d's {self.name} kernels failed: {' '.join(cmd)}\n{done.stderr[-2000:]}",
                             "check the compiler (g++, C++17)")
        os.replace(tmp, target)
        return target

    def load(self) -> ctypes.CDLL:
        """The library, built on first use."""
        if self._lib is None:
            lib = ctypes.CDLL(str(self.build()))
            for fn_name, (restype, argtypes) in self.signatures.items():
                fn = getattr(lib, fn_name)
                fn.restype, fn.argtypes = restype, argtypes
            self._lib = lib
        return self._lib


def libraries() -> list[Library]:
    from recon3d.radiance.gaussians.kernel import LIBRARY as gaussians
    from recon3d.radiance.nerf.kernel import LIBRARY as nerf
    from recon3d.radiance.ssim_cpu import LIBRARY as ssim

    return [gaussians, nerf, ssim]


if __name__ == "__main__":
    for library in libraries():
        print(library.build())
