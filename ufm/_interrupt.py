"""Ctrl-C (SIGINT) and SIGTERM that work while compiled JAX code holds the main thread.

Python runs signal handlers only in the main thread, between bytecodes; during
compilation or a long ``lax.while_loop`` the main thread sits inside XLA and a
``KeyboardInterrupt`` would arrive only when that ends (and, raised in the middle of a
compilation, it has been seen to end in a segmentation fault at shutdown). Instead, the
C-level handler's wake-up file descriptor (``signal.set_wakeup_fd``) is read by a watcher
thread, which prints one line and ends the process at once with ``os._exit``: code 130
(128 + SIGINT) or 143 (128 + SIGTERM). ``os._exit`` runs no finalizers, so XLA's threads
are never torn down under a running compilation.

Outputs stay whole: the watcher takes :data:`ufm._io.WRITE_LOCK` first, so an
atomic write in progress finishes (or never starts) before the exit, and the temporary
file of a write that never started does not exist.

A reader of standard output that goes away (``python -m ufm.solve ... | head``) ends the block with
exit code 141 (128 + SIGPIPE) and no traceback; files are written atomically, so none is left half
written.

Every CLI enters :func:`exit_on_interrupt` right after parsing its arguments, before any
computation, compilation or heavy import. Blocks may nest (``run_all`` around each
experiment): the inner block restores the outer one's handling when it ends.

Before that, while the interpreter imports JAX and NumPy (about half a second), a signal would end
the process with a ``KeyboardInterrupt`` traceback or silently (SIGTERM's default). The packages
``ufm`` and ``experiments`` therefore call :func:`guard_startup` first thing: where the process was
started as one of this project's command lines (:func:`ufm._prog.started_as`), it installs plain
Python handlers that print the same one line and exit with the same codes. Imported by any other
program (pytest, a notebook, a user's script) it does nothing.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager

from ufm import _prog  # light on purpose (os, signal, sys, ntpath): the start-up guard runs before any other import

# socket, threading and ufm._io are imported where they are used: until guard_startup() has run, a signal ends the
# process the interpreter's way (a traceback or a silent SIGTERM), so nothing may be imported before it

#: exit code of each handled signal: 128 + the signal number (the shell's convention)
EXIT_CODES = {signal.SIGINT: 128 + signal.SIGINT, signal.SIGTERM: 128 + signal.SIGTERM}
EXIT_CODE = EXIT_CODES[signal.SIGINT]
#: exit code when the reader of standard output has gone (``... | head``): 128 + SIGPIPE, as the shell has it
BROKEN_PIPE_EXIT_CODE = 141
_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


def _message(prog: str, signum: signal.Signals) -> str:
    """The one line printed when ``signum`` stops the command line ``prog``."""
    return f"{prog}: interrupted by {_NAMES[signum]}; stopped, no partial output written"


def guard_startup() -> None:
    """Where this process was started as one of this project's command lines, SIGINT / SIGTERM from now on
    (its imports) print :func:`_message` and exit with code 130 / 143, no traceback.

    Does nothing for any other program or outside the main thread; leaves alone a signal whose handler is
    not Python's default (an embedding program keeps its own; SIGINT stays ignored in a shell's background
    job, SIGTERM is still guarded there). :func:`exit_on_interrupt` takes over from here.
    """
    prog = _prog.started_as()
    if prog is None:
        return
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}

    def stop(signum, frame):
        print(_message(prog, signal.Signals(signum)), file=sys.stderr, flush=True)
        os._exit(EXIT_CODES[signal.Signals(signum)])

    for signum in EXIT_CODES:
        if signal.getsignal(signum) == defaults[signum]:
            try:
                signal.signal(signum, stop)
            except ValueError:  # not the main thread (an embedding program's worker): signals are not ours to set
                return


def _silence_stdout():
    """Standard output to ``os.devnull``: the reader has gone, and the interpreter's last flush at exit
    would otherwise fail again with a second traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor behind sys.stdout (captured, closed)
        pass


def _ignore(signum, frame):
    """Python-level handler: nothing (the watcher thread acts on the wake-up byte)."""


@contextmanager
def exit_on_interrupt(prog: str):
    """Within the block, SIGINT / SIGTERM exit the process with code 130 / 143 and one line naming ``prog``.

    A no-op outside the main thread (where signals cannot be managed). An ignored signal stays ignored
    (SIGINT in a shell's background job: Ctrl-C at the terminal is not meant for it).
    """
    import socket
    import threading

    from ufm import _io

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    reader.setblocking(True)
    writer.setblocking(False)
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    old_handlers = {
        signum: signal.signal(signum, _ignore) for signum in EXIT_CODES if signal.getsignal(signum) != signal.SIG_IGN
    }

    def watch():
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return  # the block ended: socket closed
            for signum, code in EXIT_CODES.items():
                if signum in data:
                    with _io.WRITE_LOCK:
                        print(_message(prog, signum), file=sys.stderr, flush=True)
                        os._exit(code)

    watcher = threading.Thread(target=watch, name="ufm-signal-watcher", daemon=True)
    watcher.start()
    try:
        yield
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except BrokenPipeError:
        _silence_stdout()
        raise SystemExit(BROKEN_PIPE_EXIT_CODE) from None
    finally:
        signal.set_wakeup_fd(old_fd)
        for signum, handler in old_handlers.items():
            signal.signal(signum, handler)
        writer.close()
        reader.shutdown(socket.SHUT_RDWR)
        watcher.join(timeout=1.0)
        reader.close()
