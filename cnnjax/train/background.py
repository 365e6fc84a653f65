"""One function on a thread of its own, its result or error handed over as a future."""

import concurrent.futures
import threading


def run_on_thread(fn, *args, name: str, daemon: bool) -> concurrent.futures.Future:
    """Starts `fn(*args)` on a new thread called `name`; the future gives its result or raises
    its error. daemon: the interpreter may exit without waiting for it (a compile nobody needs
    any more), else it waits (a manifest that must reach the disk)."""
    future = concurrent.futures.Future()

    def run():
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future.
            future.set_exception(e)

    threading.Thread(target=run, name=name, daemon=daemon).start()
    return future
