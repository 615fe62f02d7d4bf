"""How a job's process ends once its code returned: as the interpreter's own exit would, less
the teardown of every module.

A job process forked from the fork server (``shoal.runtime.launcher``) shares the server's
imported modules (numpy, shoal, the workflows) page by page. The interpreter's normal exit
clears every module and frees every object, and each reference count it lowers writes to a
shared page, which the kernel then copies: 12–15 ms of a trivial job's process on this
project's machine, twice on a job's critical path (a site's script, then the controller; see
docs/performance.md). ``leave`` ends the process in ~1 ms and keeps what a script can count
on at exit:

- its non-daemon threads are joined, as at a normal exit (``threading._shutdown``, which the
  interpreter itself calls first);
- ``atexit`` functions run (``logging.shutdown`` among them: handlers flushed and closed);
- every file object still open (the script's, a module's global) is flushed, text layers
  before the buffers under them;
- the script's own objects are finalized: the globals of the ``__main__`` that ``runpy`` ran
  are unreachable once it returned, and a collection frees them with their cycles (after the
  flush: it finalizes in no set order, and a buffer closed before the text layer over it
  would lose the layer's last words); then the files and stdout and stderr are flushed again.

What it does not do is call ``__del__`` of objects still held by imported modules, which the
language does not promise at exit either. ``sys.exit(code)`` keeps its meaning: None is 0, a
number is the exit code, anything else is printed to stderr and the code is 1.
"""

from __future__ import annotations

import atexit
import gc
import io
import os
import sys
import threading
from typing import NoReturn


def exit_code(exc: SystemExit) -> int:
    """The exit code ``sys.exit(exc.code)`` gives, as the interpreter computes it."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:  # stderr is gone: the code still says it failed
        pass
    return 1


def leave(code: int) -> NoReturn:
    """End this process with ``code`` as a normal exit would (see the module's docstring)."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    # Before the collection: it finalizes a script's garbage in no set order, a file's buffer
    # possibly before the text layer over it, whose last words would then be lost.
    _flush_open_files()
    gc.collect()
    _flush_open_files()  # what the script's finalizers wrote
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # closed by the script, or its reader is gone: nothing more to write
            if stream is sys.stdout and code == 0:
                code = 120  # what the interpreter exits with when it cannot flush stdout
    os._exit(code)


def _flush_open_files() -> None:
    """Flush every open file object the collector sees: text layers first, so what they hold
    reaches the buffers under them before those are flushed."""
    files = [obj for obj in gc.get_objects() if _is_file(obj)]
    files.sort(key=lambda f: not isinstance(f, io.TextIOBase))
    for f in files:
        try:
            if not f.closed and f.writable():
                f.flush()
        except Exception:  # a broken file is the script's own; the others are still flushed
            pass


def _is_file(obj: object) -> bool:
    try:
        return isinstance(obj, io.IOBase)
    except Exception:  # an object whose __class__ raises (a lazy proxy, say) is no file
        return False
