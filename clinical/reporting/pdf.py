"""The PDF of a report: the same HTML, printed by headless Chromium (``--print-to-pdf``), so one page serves both."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from clinical.errors import ConfigurationError

__all__ = ["CHROMIUM_ENV", "browser_command", "chromium_binary", "has_chromium", "print_pdf"]

#: Names the browser goes by (Debian's chromium-headless-shell and chromium, Google Chrome), first found wins.
_NAMES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Set to a browser executable to use that one instead.
CHROMIUM_ENV = "CLINICAL_CHROMIUM"


def chromium_binary() -> str:
    """The headless browser to use: ``$CLINICAL_CHROMIUM``, else the first of :data:`_NAMES` on the PATH.

    Raises
    ------
    ConfigurationError
        When none is installed, saying what to install.
    """
    configured = os.environ.get(CHROMIUM_ENV)
    found = shutil.which(configured) if configured else next(filter(None, map(shutil.which, _NAMES)), None)
    if found is None:
        raise ConfigurationError(
            f"No headless Chromium found ({configured or ', '.join(_NAMES)}): the PDF is printed by it. Install it "
            f"(Debian: apt-get install chromium-headless-shell), set {CHROMIUM_ENV}, or make the HTML only (--no-pdf)."
        )
    return found


def has_chromium() -> bool:
    """Whether :func:`chromium_binary` finds a browser."""
    try:
        chromium_binary()
    except ConfigurationError:
        return False
    return True


def browser_command(*arguments: str, profile: str | Path) -> list[str]:
    """A headless Chromium command line with its own throw-away profile, no network and no first-run work.

    ``--no-sandbox`` because the sandbox cannot start as root (containers, CI); the page is our own file.
    """
    return [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-extensions", "--disable-background-networking",
            f"--user-data-dir={profile}", *arguments]


def print_pdf(html: str | Path, pdf: str | Path, *, timeout: float = 120.0) -> Path:
    """Print the HTML file ``html`` to ``pdf`` (A4, no header or footer); returns ``pdf``.

    Raises
    ------
    ConfigurationError
        When the browser is missing, fails, or writes no PDF (with its last words).
    """
    html, pdf = Path(html).resolve(), Path(pdf).resolve()
    with tempfile.TemporaryDirectory(prefix="clinical-chromium-") as profile:
        command = browser_command("--no-pdf-header-footer", f"--print-to-pdf={pdf}", html.as_uri(), profile=profile)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
        raise ConfigurationError(f"Chromium could not print {html.name} to PDF (exit {done.returncode}): "
                                 f"{done.stderr.strip()[-500:]}")
    return pdf
