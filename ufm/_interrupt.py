"""Ctrl-C (SIGINT) that works while a compiled JAX loop holds the main thread.

Python runs signal handlers only in the main thread, between bytecodes; during
a long ``lax.while_loop`` the main thread sits inside XLA and a ``KeyboardInterrupt``
would arrive only when the solve ends. Instead, the C-level handler's wake-up
file descriptor (``signal.set_wakeup_fd``) is read by a watcher thread, which
prints one line and exits the process with code 130 (128 + SIGINT) at once.

Outputs stay whole: the watcher takes :data:`ufm._io.WRITE_LOCK` first, so an
atomic write in progress finishes (or never starts) before the exit; nothing
else writes files during a solve.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from contextlib import contextmanager

from ufm import _io

EXIT_CODE = 128 + signal.SIGINT


@contextmanager
def exit_on_interrupt(prog: str):
    """Within the block, SIGINT exits the process with code 130 and a message naming ``prog``.

    A no-op outside the main thread (where signals cannot be managed).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    reader.setblocking(True)
    writer.setblocking(False)
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    old_handler = signal.signal(signal.SIGINT, lambda signum, frame: None)

    def watch():
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return  # the block ended: socket closed
            if signal.SIGINT in data:
                with _io.WRITE_LOCK:
                    print(f"{prog}: interrupted by SIGINT (Ctrl-C); stopped, no partial output written",
                          file=sys.stderr, flush=True)
                    os._exit(EXIT_CODE)

    watcher = threading.Thread(target=watch, name="ufm-sigint-watcher", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGINT, old_handler)
        writer.close()
        reader.shutdown(socket.SHUT_RDWR)
        watcher.join(timeout=1.0)
        reader.close()
