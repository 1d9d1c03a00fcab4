"""`intemporal worker`'s second Ctrl-C or SIGTERM: it ends the process whichever thread the
kernel hands the signal to.

The race CI met: right after saying "stopping", the worker's main thread creates its grace
timer (glibc blocks every signal in the creating thread for a moment), so a second SIGTERM
sent then went to another thread; its Python handler waited for the main thread to run
Python again, which never came while it waited for an activity that does not end. Here the
main thread blocks SIGTERM for good, which makes that moment last.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from process_helpers import wait_until

WORKER_MAIN = """\
import signal, threading
from intemporal.cli_worker import _signals

with _signals() as stopping:
    stopping()  # the first signal was handled: the worker is stopping
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # as while creating a thread
    print("stopping", flush=True)
    threading.Event().wait()  # as while waiting for an activity that does not end
"""


def test_a_second_sigterm_ends_the_worker_even_when_its_main_thread_cannot_take_it(
    tmp_path: Path,
) -> None:
    # Given a stopping worker whose main thread blocks SIGTERM and waits without end
    (tmp_path / "stopping_worker.py").write_text(WORKER_MAIN)
    proc = subprocess.Popen(
        [sys.executable, "stopping_worker.py"], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        wait_until(lambda: "stopping" in proc.stdout.readline(), 20, "the worker stopping")  # type: ignore[union-attr]
        # When a second SIGTERM comes
        proc.send_signal(signal.SIGTERM)
        # Then the process ends at once, with the code a shell gives a SIGTERM
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
