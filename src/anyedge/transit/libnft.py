"""libnftables through ctypes: one JSON batch in, one kernel transaction out.

``nft`` the command is a thin front end to ``libnftables.so.1``; calling the library in
process saves a process start and a netlink socket per change.  Debian's Python binding
(``python3-nftables``) is built for the system Python only, so this module loads the
same shared library with :mod:`ctypes` and offers the one call the transit daemon needs:
:meth:`Nft.run`, which hands the library a JSON document (``{"nftables": [...]}``, the
schema of ``libnftables-json(5)``) and returns its JSON answer.  The library sends the
whole document to the kernel as one netlink batch: all of it is applied, or none.

A context's netlink socket belongs to the network namespace the thread was in when the
socket was opened, so the transit applier keeps one :class:`Nft` per namespace and uses
it only while the thread is inside that namespace (:func:`anyedge.adapters.netns.entered`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
from typing import Any

_NFT_CTX_OUTPUT_HANDLE = 1 << 3
_NFT_CTX_OUTPUT_JSON = 1 << 4  # also makes nft_run_cmd_from_buffer parse JSON input

_lib: ctypes.CDLL | None = None


class NftError(RuntimeError):
    """libnftables refused a batch; the message is what it printed, with the batch."""


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise NftError(f"cannot load libnftables ({name}): {e}; install nftables") from e
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        _lib = lib
    return _lib


def available() -> bool:
    """Whether libnftables can be loaded here."""
    try:
        _load()
    except NftError:
        return False
    return True


class Nft:
    """One libnftables context (use it inside the namespace it is meant for)."""

    def __init__(self) -> None:
        self._lib = _load()
        self._ctx = self._lib.nft_ctx_new(0)
        if not self._ctx:
            raise NftError("nft_ctx_new failed")
        self._lib.nft_ctx_output_set_flags(self._ctx, _NFT_CTX_OUTPUT_JSON | _NFT_CTX_OUTPUT_HANDLE)
        self._lib.nft_ctx_buffer_output(self._ctx)
        self._lib.nft_ctx_buffer_error(self._ctx)

    def run(self, commands: list[dict[str, Any]]) -> dict[str, Any]:
        """Run ``commands`` (``libnftables-json`` objects) as one transaction."""
        if self._ctx is None:
            raise NftError("context is closed")
        doc = json.dumps({"nftables": commands}).encode()
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, doc)
        out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
        if rc != 0:
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
            raise NftError(f"libnftables: {err.strip()}\nbatch: {doc.decode()}")
        return json.loads(out) if out.strip() else {}

    def ruleset(self) -> dict[str, Any]:
        """The namespace's whole ruleset, as ``nft -j list ruleset`` prints it."""
        return self.run([{"list": {"ruleset": None}}])

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def __enter__(self) -> Nft:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
