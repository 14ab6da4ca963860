"""Child processes that must not outlive the program that started them.

`die_with_parent` runs in the child: as a `preexec_fn` before an exec (the push server's
embedded valkey-server) or as the first thing a Python child does (the adapter's scrape
process, `adapter.scrapeproc`). Either way the kernel sends the child SIGTERM when the thread
that started it ends, even when the parent was killed with SIGKILL (`PR_SET_PDEATHSIG`, Linux;
it survives the exec), and the terminal's Ctrl-C, which reaches the whole process group, is the
parent's to handle.
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent: int) -> None:
    """In the child: SIGTERM when the starting thread of `parent` ends; no Ctrl-C."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        os._exit(127)
    # The parent may have died before the prctl: nobody would signal us then.
    if os.getppid() != parent:
        os._exit(127)
    # The mask survives exec: a valkey-server then never sees SIGINT.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
