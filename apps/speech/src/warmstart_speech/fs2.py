"""Lazy, safe import of fairseq2 for the speech app.

fairseq2n needs ``libsndfile.so.1`` when it is imported; the ``soundfile`` wheel bundles a library with that
soname (``_soundfile_data/libsndfile_x86_64.so``). Loading it with ``RTLD_GLOBAL`` first lets fairseq2 import
on a machine without the system package. Only this app imports fairseq2, and only inside functions, so
``warmstart-speech --help`` stays fast and the core never depends on fairseq2.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from functools import cache

log = logging.getLogger(__name__)


@cache
def preload_libsndfile() -> str | None:
    """Load the soundfile wheel's bundled libsndfile globally; returns its path (None if absent)."""
    import soundfile

    folder = os.path.join(os.path.dirname(soundfile.__file__), "_soundfile_data")
    machine = platform.machine()
    for name in (f"libsndfile_{machine}.so", "libsndfile_x86_64.so", "libsndfile_arm64.so"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return path
            except OSError as exc:  # wrong architecture: try the next one
                log.debug("could not load %s: %s", path, exc)
    return None  # a system libsndfile.so.1 may still satisfy fairseq2n


@cache
def fairseq2_data():
    """The ``fairseq2.data`` namespace (audio decoder, fbank converter, pipelines), libsndfile preloaded."""
    preload_libsndfile()
    import fairseq2.data as data
    import fairseq2.data.audio  # noqa: F401
    import fairseq2.data.data_pipeline  # noqa: F401

    return data
