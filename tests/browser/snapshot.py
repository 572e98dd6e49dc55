"""Screenshots and a printed PDF of a rendered report, for committing beside it.

    python tests/browser/snapshot.py reports/h200/default/report

writes ``screenshot-1400.png`` and ``screenshot-400.png`` (the whole page at 1400 and 400 CSS
pixels wide) and ``report.pdf`` (printed with the page's print CSS: A4 landscape) into that
folder, with the headless Chromium of the browser tests.  The page is served from a loopback
HTTP server, so the PDF's links hold no path of this machine."""

from __future__ import annotations

import functools
import http.server
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chromium_cdp import Chromium, find_chromium  # noqa: E402


def snapshot(report_dir: Path) -> list[Path]:
    binary = find_chromium()
    if binary is None:
        raise SystemExit("no chromium binary on PATH (Debian: apt-get install -y chromium)")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(report_dir.resolve()))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = f"http://127.0.0.1:{server.server_port}/index.html"
    out = []
    with server, Chromium(binary) as browser:
        for width in (1400, 400):
            browser.open(page, width=width)
            if browser.problems():
                raise SystemExit(f"the page has problems: {browser.problems()}")
            out.append(browser.screenshot(report_dir / f"screenshot-{width}.png", width=width))
        browser.open(page, width=1400)
        out.append(browser.pdf(report_dir / "report.pdf"))
        server.shutdown()
    return out


if __name__ == "__main__":
    for path in snapshot(Path(sys.argv[1])):
        print(f"{path}: {path.stat().st_size:,} bytes")
