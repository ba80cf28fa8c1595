"""A quiet HTTP server for a local folder, so img2dataset can "download" images with no internet.

The server binds port 0 (the OS picks a free port) on the loopback interface and runs in a daemon
thread. Use it as a context manager::

    with serve_directory(www) as base_url:      # e.g. "http://127.0.0.1:40123"
        download_cc3m(tsv_whose_urls_start_with_base_url, out)

or, in a notebook where the server should outlive one cell, as an object with ``start``/``stop``::

    server = LoopbackImageServer(www).start()
    ... server.url ...
    server.stop()

Set ``no_proxy=127.0.0.1,localhost`` when an HTTP proxy is configured, or urllib (and so
img2dataset) sends loopback requests to the proxy.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves files like ``python -m http.server`` without writing a log line per request."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base class)
        return


class LoopbackImageServer:
    """Serve the files under ``root`` over HTTP at :attr:`url` until :meth:`stop`.

    A missing file answers ``404``; any file is served with a type guessed from its extension, so a
    text file named ``x.jpg`` reaches the client as (undecodable) image bytes. Subclasses may set
    :attr:`handler_class` (a :class:`QuietHandler` subclass) to change how requests are answered (tests
    delay some, to make img2dataset's threads finish in another order).
    """

    handler_class: type[QuietHandler] = QuietHandler

    def __init__(self, root: str | Path, host: str = "127.0.0.1") -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"cannot serve {self.root}: not a directory; create it or pass the image folder")
        self.host = host
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:40123``; a file ``root/a/b.jpg``
        is at ``url + "/a/b.jpg"``."""
        if self._server is None:
            raise RuntimeError("the server is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackImageServer:
        """Bind a free port and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError(f"already serving {self.root} at {self.url}")
        handler = functools.partial(self.handler_class, directory=str(self.root))
        self._server = ThreadingHTTPServer((self.host, 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"loopback:{self.root.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (a no-op when not running)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join()
        self._server, self._thread = None, None

    def __enter__(self) -> LoopbackImageServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@contextmanager
def serve_directory(root: str | Path, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``root`` while the ``with`` block runs; yields the base URL (no trailing slash)."""
    server = LoopbackImageServer(root, host).start()
    try:
        yield server.url
    finally:
        server.stop()
