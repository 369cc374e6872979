"""The built site in a real browser: every page of _build/html in headless Chromium, offline.

The site is served on 127.0.0.1 by a thread of this test; Chromium resolves no other host
(`--host-resolver-rules`), so a font or script from a CDN fails, and any request that leaves
localhost is reported besides. For every page: no console error or failed request; every image
loaded (non-zero natural size); math rendered by MathJax (renderer output present, no raw
`\\(…\\)`, `\\[…\\]` or `$…$` left in the text); every hidden solution closed, then open after a
real mouse click; in dark mode, figures shown as drawn (no filter, white background). A
screenshot of each page (solutions open) is saved in _build/screenshots/, plus a dark-mode one
of each page with figures; the cheat sheet is printed to PDF (A4 and US Letter) and must fit
on one page.

Chromium is driven over the DevTools protocol with `websocket-client` (already in the lock file);
no browser is downloaded. Without Chromium the tests skip, saying so (`pytest -rs` shows why);
with BOOK_REQUIRE_BROWSER=1 (set by .ci/run) they fail instead. BOOK_SITE and
BOOK_SCREENSHOTS override the folders.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import websocket

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(os.environ.get("BOOK_SITE", ROOT / "_build" / "html"))
SHOTS = Path(os.environ.get("BOOK_SCREENSHOTS", ROOT / "_build" / "screenshots"))
REQUIRE = os.environ.get("BOOK_REQUIRE_BROWSER") == "1"
NOT_PAGES = {"_static", "_sources", "_images", "mathjax"}
PAGES = (
    sorted(
        p.relative_to(SITE).as_posix()
        for p in SITE.rglob("*.html")
        if not NOT_PAGES & set(p.relative_to(SITE).parts[:-1])
    )
    if SITE.is_dir()
    else []
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
]


def find_chromium() -> str | None:
    candidates = [os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"]
    return next((shutil.which(c) for c in candidates if c and shutil.which(c)), None)


def unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (BOOK_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


# --- a minimal DevTools-protocol client ------------------------------------------------------


class DevTools:
    """One page target of Chromium, spoken to over its DevTools websocket."""

    def __init__(self, url: str):
        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.counter = 0
        self.events: list[dict] = []

    def send(self, method: str, **params) -> dict:
        self.counter += 1
        ident = self.counter
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        """The first not yet consumed event `method`, waiting for it if needed."""
        deadline = time.monotonic() + timeout
        while True:
            for number, event in enumerate(self.events):
                if event["method"] == method and not event.get("_seen"):
                    self.events[number]["_seen"] = True
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.ws.settimeout(remaining)
            try:
                message = json.loads(self.ws.recv())
            finally:
                self.ws.settimeout(60)
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


class Browser:
    """Headless Chromium with its own empty profile, killed (its process group) on close."""

    def __init__(self, executable: str):
        self.profile = tempfile.mkdtemp(prefix="book-chromium-")
        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        page = next(t for t in targets if t["type"] == "page")
        self.tab = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.tab.send(f"{domain}.enable")
        self.tab.send("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)

    def close(self) -> None:
        if getattr(self, "tab", None):
            self.tab.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self.profile, ignore_errors=True)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


# --- what is checked on a page ---------------------------------------------------------------

READY = """(async () => {
  const deadline = Date.now() + 30000;
  if (document.querySelector('script[src*="mathjax"]')) {
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
      if (Date.now() > deadline) return 'MathJax did not load';
      await new Promise(r => setTimeout(r, 50));
    }
    await MathJax.startup.promise;
    // The initial typesetting may still be running: wait until every math element is rendered.
    const pending = () => Array.from(document.querySelectorAll('span.math, div.math'))
      .some(e => !e.querySelector('mjx-container'));
    while (pending() && Date.now() < deadline) await new Promise(r => setTimeout(r, 100));
  }
  await Promise.all(Array.from(document.images).map(img => img.complete ? null :
    new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); })));
  await document.fonts.ready;
  return 'ok';
})()"""

INSPECT = r"""(() => {
  const images = Array.from(document.images)
    .map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}));
  const mathNodes = Array.from(document.querySelectorAll('span.math, div.math'));
  const unrendered = mathNodes.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80));
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, textarea, mjx-container, .highlight').forEach(e => e.remove());
  const text = clone.textContent;
  const raw = [];
  const patterns = [/\\\(.{1,80}?\\\)/gs, /\\\[.{1,80}?\\\]/gs, /\$\$.{1,80}?\$\$/gs,
                    /(?<![\\\w$])\$[^$\s][^$\n]{0,80}?\$(?![\w$])/g];
  for (const pattern of patterns) {
    for (const match of text.matchAll(pattern)) raw.push(match[0]);
  }
  return {
    title: document.title,
    images, unrendered, raw,
    mathNodes: mathNodes.length,
    rendered: document.querySelectorAll('mjx-container').length,
    solutions: document.querySelectorAll('div.solution').length,
    contentImages: document.querySelectorAll('.bd-content img').length,
    height: Math.ceil(document.documentElement.scrollHeight),
  };
})()"""

SOLUTIONS = """(() => Array.from(document.querySelectorAll('div.solution')).map(s => ({id: s.id,
  visible: Array.from(s.children).filter(c => !c.classList.contains('admonition-title'))
    .some(c => c.offsetHeight > 0 && getComputedStyle(c).visibility !== 'hidden')})))()"""

# Where a reader clicks to open a solution: the toggle button (the chevron) in its title.
CLICK_TARGET = """(id => {
  const s = document.getElementById(id);
  const target = s.querySelector('.admonition-title .toggle-button') || s.querySelector('.admonition-title');
  target.scrollIntoView({block: 'center'});
  const r = target.getBoundingClientRect();
  return {x: r.left + r.width / 2, y: r.top + r.height / 2};
})"""

DARK = """(async () => {
  document.documentElement.dataset.theme = 'dark';
  document.documentElement.dataset.mode = 'dark';
  await new Promise(r => setTimeout(r, 200));
  return Array.from(document.querySelectorAll('.bd-content img')).map(img => {
    const s = getComputedStyle(img);
    return {src: img.getAttribute('src'), filter: s.filter, background: s.backgroundColor};
  });
})()"""


def console_problems(events: list[dict], base: str) -> list[str]:
    """Errors from the console, uncaught exceptions, failed or external requests."""
    problems = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            problems.append(f"console.error: {args[:200]}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            problems.append(
                f"uncaught exception: {details.get('exception', {}).get('description', details.get('text'))}"[:300]
            )
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            problems.append(f"console error: {entry.get('text')} {entry.get('url', '')}"[:300])
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith((base, "data:", "blob:", "about:")):
                problems.append(f"request leaving localhost: {url[:200]}")
        elif method == "Network.responseReceived" and params.get("response", {}).get("status", 200) >= 400:
            problems.append(f"HTTP {params['response']['status']}: {params['response']['url'][:200]}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            problems.append(f"request failed: {params.get('errorText')}")
    return problems


def open_page(browser: Browser, url: str, *, redirects: int = 0) -> None:
    tab = browser.tab
    # Through about:blank first, so that no late event of the previous page counts for this one.
    tab.send("Page.navigate", url="about:blank")
    tab.wait_for("Page.loadEventFired")
    tab.send("Runtime.evaluate", expression="0")
    tab.events.clear()
    tab.send("Page.navigate", url=url)
    for _ in range(1 + redirects):
        tab.wait_for("Page.loadEventFired")
    deadline = time.monotonic() + 30
    while tab.evaluate("document.readyState + ' ' + location.href").split()[0] != "complete" or not tab.evaluate(
        "location.href"
    ).startswith(url.rsplit("/", 1)[0]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not finish loading")
        time.sleep(0.05)
    state = tab.evaluate(READY)
    assert state == "ok", state


def check_page(browser: Browser, base: str, page: str, shots: Path | None) -> list[str]:
    """Open one page and return every problem found on it (empty: the page is fine)."""
    tab = browser.tab
    source = (SITE / page).read_text(errors="replace") if (SITE / page).exists() else ""
    open_page(browser, base + page, redirects=1 if re.search(r"http-equiv=.refresh", source, re.I) else 0)
    report = tab.evaluate(INSPECT)
    problems = [f"image not loaded: {i['src']}" for i in report["images"] if not i["ok"]]
    problems += [f"math not rendered: {m!r}" for m in report["unrendered"]]
    problems += [f"raw math left in the text: {m!r}" for m in report["raw"]]
    if report["mathNodes"] and report["rendered"] < report["mathNodes"]:
        problems.append(f"{report['mathNodes']} math elements but {report['rendered']} rendered by MathJax")
    # Hidden solutions: closed at first, open after a real click on their title.
    for solution in tab.evaluate(SOLUTIONS):
        if solution["visible"]:
            problems.append(f"solution {solution['id']} is not hidden before a click")
            continue
        point = tab.evaluate(f"{CLICK_TARGET}({json.dumps(solution['id'])})")
        for kind in ("mousePressed", "mouseReleased"):
            tab.send("Input.dispatchMouseEvent", type=kind, x=point["x"], y=point["y"], button="left", clickCount=1)
        time.sleep(0.3)
        after = {s["id"]: s for s in tab.evaluate(SOLUTIONS)}
        if not after[solution["id"]]["visible"]:
            problems.append(f"solution {solution['id']} does not open when clicked")
    if shots is not None:
        save_screenshot(browser, shots / (page.replace("/", "__").removesuffix(".html") + ".png"))
    # Dark mode keeps figures as drawn: no dimming filter, a white background.
    if report["contentImages"]:
        for image in tab.evaluate(DARK):
            if image["filter"] != "none" or image["background"] not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"):
                problems.append(
                    f"dark mode alters figure {image['src']}: filter {image['filter']}, {image['background']}"
                )
        if shots is not None:  # the top of the page is enough to see dark mode, and faster
            save_screenshot(browser, shots / (page.replace("/", "__").removesuffix(".html") + "-dark.png"), 5000)
    tab.send("Runtime.evaluate", expression="0")  # collect the events still in flight
    problems += console_problems(tab.events, base)
    return problems


def save_screenshot(browser: Browser, path: Path, max_height: int = 16000) -> None:
    """The whole page, up to max_height pixels."""
    metrics = browser.tab.send("Page.getLayoutMetrics")["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": 1280, "height": min(int(metrics["height"]), max_height), "scale": 1}
    shot = browser.tab.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def pdf_pages(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        unavailable("Chromium not installed (apt-get install -y chromium): browser test of the site not run")
    session = Browser(executable)
    yield session
    session.close()


@pytest.fixture(scope="module")
def site():
    if not PAGES:
        unavailable(f"no built site in {SITE}: run `make book` first")
    server, base = serve(SITE)
    # No clean-up here: with pytest-xdist each worker has its own server and browser, and one
    # worker must not delete the other's screenshots (`make test-browser` empties the folder).
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield base
    server.shutdown()


# --- the checks, proven on a planted page --------------------------------------------------------

PLANTED = r"""<!doctype html><html><head><title>planted</title>
<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script></head>
<body><p>Raw math \(x^2\) and $y$ here.</p><span class="math">\(z\)</span>
<img src="missing.png"><script>console.error("planted error")</script></body></html>"""


def test_the_checks_catch_a_planted_broken_page(browser, tmp_path):
    (tmp_path / "planted.html").write_text(PLANTED)
    server, base = serve(tmp_path)
    try:
        tab = browser.tab
        tab.events.clear()
        tab.send("Page.navigate", url=base + "planted.html")
        tab.wait_for("Page.loadEventFired")
        report = tab.evaluate(INSPECT)
        tab.send("Runtime.evaluate", expression="0")
        problems = console_problems(tab.events, base)
    finally:
        server.shutdown()
    assert [i["ok"] for i in report["images"]] == [False]
    assert report["unrendered"] == ["\\(z\\)"]
    assert "\\(x^2\\)" in report["raw"] and "$y$" in report["raw"]
    assert any("planted error" in p for p in problems)
    assert any("leaving localhost" in p and "cdn.jsdelivr.net" in p for p in problems)
    assert any("HTTP 404" in p for p in problems)


def test_the_network_is_limited_to_localhost(browser):
    tab = browser.tab
    tab.send("Page.navigate", url="about:blank")
    tab.wait_for("Page.loadEventFired")
    tab.events.clear()
    tab.send("Page.navigate", url="https://example.com/")
    request = None
    while request is None:
        event = tab.wait_for("Network.requestWillBeSent", timeout=20)
        if "example.com" in event["params"]["request"]["url"]:
            request = event["params"]["requestId"]
    while True:
        failed = tab.wait_for("Network.loadingFailed", timeout=20)
        if failed["params"]["requestId"] == request:
            break
    assert "NAME_NOT_RESOLVED" in failed["params"]["errorText"]


# --- every page of the site ---------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES or ["(no site built)"])
def test_page_renders_offline(browser, site, page):
    assert check_page(browser, site, page, SHOTS) == []


def test_site_has_no_cdn_script_or_stylesheet():
    """Statically too: no <script src> or <link href> to another host in any page."""
    if not PAGES:
        unavailable(f"no built site in {SITE}: run `make book` first")
    external = []
    for page in PAGES:
        html = (SITE / page).read_text(errors="replace")
        for tag in re.findall(r"<(?:script|link)\b[^>]*>", html):
            if re.search(r"""(?:src|href)=["'](?:https?:)?//""", tag) and 'rel="canonical"' not in tag:
                external.append(f"{page}: {tag[:160]}")
    assert external == []


def test_cheat_sheet_prints_on_one_page(browser, site):
    page = "chapters/cheatsheet.html"
    if page not in PAGES:
        pytest.fail("the cheat sheet page is not in the built site (is chapters/cheatsheet in _toc.yml?)")
    open_page(browser, site + page)
    tab = browser.tab
    counts = {}
    for paper, (width, height) in {"a4": (8.27, 11.69), "letter": (8.5, 11.0)}.items():
        pdf = tab.send(
            "Page.printToPDF",
            paperWidth=width,
            paperHeight=height,
            printBackground=True,
            marginTop=0.35,
            marginBottom=0.35,
            marginLeft=0.4,
            marginRight=0.4,
        )
        data = base64.b64decode(pdf["data"])
        (SHOTS / f"cheatsheet-{paper}.pdf").write_bytes(data)
        counts[paper] = pdf_pages(data)
    tab.send("Emulation.setEmulatedMedia", media="print")
    save_screenshot(browser, SHOTS / "cheatsheet-print.png")
    tab.send("Emulation.setEmulatedMedia", media="")
    assert counts == {"a4": 1, "letter": 1}
