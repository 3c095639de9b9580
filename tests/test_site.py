"""The documentation site: built strictly with MkDocs, then checked in a real browser.

The site is built as ``make docs`` builds it (``mkdocs build --strict``, so a broken
link, a missing page or an unresolved reference fails), into a temporary directory,
and served over HTTP on 127.0.0.1 (the search runs in a web worker, which file:// URLs
do not allow). Headless Chromium, driven by selenium through chromedriver, opens the
home, configuration and API pages and checks that they show the headings of their
Markdown sources, and types a word into the search box until results appear.

A screenshot of the home page is kept as ``site-home.png`` in ``$DBPOOL_TEST_ARTIFACTS``
(default: ``.artifacts/`` at the repository root); the test prints where.

Without MkDocs (the ``docs`` extra), selenium, Chromium or chromedriver (Debian:
``apt-get install chromium chromium-driver``) the tests skip, saying what is missing;
under ``DBPOOL_REQUIRE_DATABASES=1`` (CI, which installs them) they fail instead.
"""

from __future__ import annotations

import functools
import html
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.servers import REQUIRE_DATABASES

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("DBPOOL_TEST_ARTIFACTS") or ROOT / ".artifacts")
# Generous: the machines that run this are small and busy.
BUILD_TIMEOUT = 300
WAIT = 45

pytestmark = pytest.mark.slow


def _missing(reason: str) -> None:
    if REQUIRE_DATABASES:
        pytest.fail(f"{reason} and DBPOOL_REQUIRE_DATABASES=1")
    pytest.skip(reason)


def _need_mkdocs() -> None:
    for module, package in (
        ("mkdocs", "mkdocs"),
        ("material", "mkdocs-material"),
        ("mkdocstrings_handlers.python", "mkdocstrings[python]"),
    ):
        try:
            __import__(module)
        except ImportError:
            _missing(f"{package} is not installed (pip install -e '.[docs]')")


def _browser() -> tuple[str, str]:
    """Chromium and chromedriver, or skip (fail under DBPOOL_REQUIRE_DATABASES=1)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[test]')")
    chromium = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if chromium is None:
        _missing("Chromium is not installed (apt-get install chromium)")
    driver = shutil.which("chromedriver")
    if driver is None:
        _missing("chromedriver is not installed (apt-get install chromium-driver)")
    assert chromium is not None and driver is not None
    return chromium, driver


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as `make docs` builds it, into a temporary directory."""
    _need_mkdocs()
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"mkdocs build --strict failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}",
            pytrace=False,
        )
    return out


@pytest.fixture(scope="module")
def base_url(site: Path) -> Iterator[str]:
    """The site served over HTTP on a free port of 127.0.0.1."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=site))
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, driven through chromedriver (found before the site is built)."""
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root (CI), Chromium refuses to start with its sandbox
        "--disable-dev-shm-usage",  # containers have a tiny /dev/shm
        "--disable-gpu",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(WAIT * 2)
    try:
        yield driver
    finally:
        driver.quit()


def _open(browser: Any, url: str, title: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, WAIT).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, "article h1"))
    )
    assert _text(browser.find_element(By.CSS_SELECTOR, "article h1")) == title


def _text(element: Any) -> str:
    """An element's visible text, without the heading's permalink sign."""
    return " ".join(str(element.text).replace("¶", "").split())


def _headings(browser: Any, level: int) -> list[str]:
    from selenium.webdriver.common.by import By

    shown = browser.find_elements(By.CSS_SELECTOR, f"article h{level}")
    return [_text(h) for h in shown if h.is_displayed()]


def _markdown_headings(path: Path, level: int) -> list[str]:
    """The text of the Markdown file's headings of one level, outside code blocks, as a
    browser shows it (no backticks, emphasis or link targets)."""
    marker = "#" * level + " "
    headings, fence = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        opening = re.match(r"\s*(```+|~~~+)", line)
        if opening and (not fence or opening[1].startswith(fence)):
            fence = "" if fence else opening[1]
        elif not fence and line.startswith(marker):
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line[len(marker) :])
            headings.append(" ".join(text.replace("`", "").replace("*", "").split()))
    return headings


def test_the_site_builds_strictly(site: Path) -> None:
    for page in ("index.html", "configuration/index.html", "api/index.html", "cli/index.html"):
        assert (site / page).is_file(), page
    # Mounted from the repository root: the changelog, not a copy of it.
    changelog = (site / "changelog" / "index.html").read_text(encoding="utf-8")
    first_entry = _markdown_headings(ROOT / "CHANGELOG.md", 2)[0]
    assert html.escape(first_entry.strip("[]"), quote=False) in changelog


def test_the_api_reference_renders_every_public_name(site: Path) -> None:
    import dbpool

    page = (site / "api" / "index.html").read_text(encoding="utf-8")
    missing = [name for name in dbpool.__all__ if f'id="dbpool.{name}"' not in page]
    assert not missing, f"the API reference has no entry for: {', '.join(missing)}"
    # A Sphinx role, or a docstring section the parser did not recognise, shows as is;
    # the sections it did recognise have titles of their own, left out here.
    text = re.sub(r'<span class="doc-section-title">.*?</span>', " ", page, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    roles = sorted(set(re.findall(r":(?:class|func|meth|attr|mod|exc|data|obj):", text)))
    assert not roles, f"Sphinx roles shown raw in the API reference: {roles}"
    sections = "Args|Arguments|Parameters|Returns|Raises|Yields|Attributes|Example|Examples"
    raw = sorted(set(re.findall(rf"(?m)^\s*({sections}):\s*$", text)))
    assert not raw, f"docstring sections shown raw in the API reference: {raw}"


def test_home_page(browser: Any, base_url: str) -> None:
    _open(browser, base_url, "dbpool")
    assert _headings(browser, 2) == _markdown_headings(ROOT / "README.md", 2)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "site-home.png"
    assert browser.save_screenshot(str(screenshot)), "no screenshot"
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot of the home page: {screenshot}")


def test_configuration_page(browser: Any, base_url: str) -> None:
    _open(browser, base_url + "configuration/", "Configuration")
    assert _headings(browser, 2) == _markdown_headings(ROOT / "docs" / "configuration.md", 2)


def test_api_page(browser: Any, base_url: str) -> None:
    from selenium.webdriver.common.by import By

    import dbpool

    _open(browser, base_url + "api/", "API reference")
    assert _headings(browser, 2) == _markdown_headings(ROOT / "docs" / "api.md", 2)
    entries = browser.find_elements(By.CSS_SELECTOR, "article h3 .doc-object-name")
    names = {_text(name) for name in entries if name.is_displayed()}
    missing = sorted(set(dbpool.__all__) - names - {"metrics"})
    assert not missing, f"no heading on the API page for: {', '.join(missing)}"


def test_search(browser: Any, base_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, base_url, "dbpool")
    box = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")
    box.click()
    box.send_keys("pgbouncer")
    results = WebDriverWait(browser, WAIT).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, ".md-search-result__item")
    )
    assert any("pgbouncer" in str(r.text).lower() for r in results)
    links = [r.find_element(By.TAG_NAME, "a").get_attribute("href") for r in results]
    assert all(str(link).startswith(base_url) for link in links), links
