"""Compile the edge's BPF programs: ``python -m anyedge.edge.build``.

Each ``bpf/NAME.bpf.c`` becomes ``NAME-HASH.bpf.o`` in a build directory, where HASH
covers the C sources and the compiler's flags: a changed source builds a new object,
an unchanged one is reused, on this machine or on one without the toolchain that
was given the build directory.  The programs are written once against
``vmlinux.h``, the kernel's own types dumped from its BTF
(``bpftool btf dump file /sys/kernel/btf/vmlinux format c``), and relocated by libbpf
at load time to the running kernel's layout (CO-RE): nothing needs kernel headers.

The build directory is ``$ANYEDGE_BPF_BUILD`` if set, else ``~/.cache/anyedge/bpf``
(``$XDG_CACHE_HOME`` respected).  Loaders call :func:`object_path`, which builds on
first use, so a fresh clone needs no separate step; CI may build ahead with this
module's command.  Needs ``clang`` and ``bpftool`` (Debian: clang, llvm, libbpf-dev,
bpftool).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "bpf"
VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
_ARCH = {"x86_64": "x86", "aarch64": "arm64", "arm64": "arm64", "s390x": "s390"}
CFLAGS = ["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"]


class BuildError(RuntimeError):
    """The toolchain is missing or a compile failed; the message says which and why."""


def build_dir() -> Path:
    env = os.environ.get("ANYEDGE_BPF_BUILD")
    if env:
        return Path(env)
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "anyedge" / "bpf"


def programs() -> list[str]:
    """Names of the programs there are sources for (``l4drop`` for ``l4drop.bpf.c``)."""
    return sorted(p.name.removesuffix(".bpf.c") for p in SOURCES.glob("*.bpf.c"))


def missing_tools() -> list[str]:
    """What the build needs and this machine lacks (empty when it can build)."""
    lacking = [t for t in ("clang", "bpftool") if shutil.which(t) is None]
    if not VMLINUX_BTF.exists():
        lacking.append(f"{VMLINUX_BTF} (a kernel with BTF)")
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        lacking.append("/usr/include/bpf/bpf_helpers.h (libbpf-dev)")
    return lacking


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    p = subprocess.run(argv, capture_output=True, check=False, **kw)  # type: ignore[call-overload]
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip()
        raise BuildError(f"{' '.join(argv)}: exit {p.returncode}\n{err}")
    return p  # type: ignore[no-any-return]


def _flags() -> list[str]:
    arch = _ARCH.get(platform.machine(), platform.machine())
    return [*CFLAGS, f"-D__TARGET_ARCH_{arch}"]


def _digest(name: str) -> str:
    h = hashlib.sha256()
    for src in [SOURCES / f"{name}.bpf.c", *sorted(SOURCES.glob("*.h"))]:
        h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    h.update(" ".join(_flags()).encode())
    return h.hexdigest()[:16]


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (two builds at once each write their own
    temporary file and the last rename wins; both wrote the same bytes)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def vmlinux_h(out: Path) -> Path:
    """``out/vmlinux.h`` from the running kernel's BTF (made once per build dir)."""
    path = out / "vmlinux.h"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        dump = _run(["bpftool", "btf", "dump", "file", str(VMLINUX_BTF), "format", "c"])
        _atomic_write(path, dump.stdout)
    return path


def build(name: str, out: Path | None = None) -> Path:
    """The object of program ``name``, compiled into ``out`` unless it is there already
    (an object built elsewhere, by CI say, loads on a machine without the toolchain)."""
    out = out or build_dir()
    src = SOURCES / f"{name}.bpf.c"
    if not src.exists():
        raise BuildError(f"no BPF program {name} (no {src})")
    obj = out / f"{name}-{_digest(name)}.bpf.o"
    if obj.exists():
        return obj
    lacking = missing_tools()
    if lacking:
        raise BuildError("cannot build BPF programs, missing: " + ", ".join(lacking))
    out.mkdir(parents=True, exist_ok=True)
    inc = vmlinux_h(out).parent
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tmp_obj = Path(tmp) / obj.name
        _run(["clang", *_flags(), f"-I{inc}", f"-I{SOURCES}", "-c", str(src), "-o", str(tmp_obj)])
        os.replace(tmp_obj, obj)
    return obj


def object_path(name: str) -> Path:
    """Where the loader finds program ``name``'s object, building it first if needed."""
    return build(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m anyedge.edge.build", description="Compile the edge's BPF programs."
    )
    ap.add_argument("names", nargs="*", help=f"programs to build (default: all: {programs()})")
    ap.add_argument("--out", type=Path, help=f"build directory (default: {build_dir()})")
    args = ap.parse_args(argv)
    try:
        for name in args.names or programs():
            print(build(name, args.out))
    except BuildError as e:
        print(f"anyedge.edge.build: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
