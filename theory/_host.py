"""The one reader of free host memory, for the memory checks of :mod:`theory` and :mod:`ufm`.

Internal API: :func:`theory.validation.allocation` refuses a result larger than :func:`free_bytes`, and
``ufm._memory.free_bytes`` returns it on CPU. It lives in :mod:`theory` because :mod:`theory` never
imports :mod:`ufm`; it imports only the standard library. Tests that simulate a small machine patch
:func:`free_bytes` here, once for both.
"""

from __future__ import annotations

import os


def free_bytes() -> int:
    """Memory the OS can give this process now (``MemAvailable`` on Linux, else free pages), in bytes."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
