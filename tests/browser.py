"""A page of ours in the run's headless Chromium (tests/conftest.py's ``chromium``), offline."""

import contextlib
import re


@contextlib.contextmanager
def opened_page(browser, path):
    """The page at ``path`` in ``browser`` (the run's Chromium), opened from file:// with the network cut off, once
    it says it is drawn; ``page.requests`` and ``page.problems`` record what it requested and every JS error it
    logged."""
    context = browser.new_context(viewport={"width": 1000, "height": 1000}, offline=True)
    requests, problems = [], []
    context.route(re.compile(r"^(?!file:|data:|blob:)"), lambda route: route.abort())
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    page.requests, page.problems, page.url_expected = requests, problems, path.as_uri()
    try:
        yield page
    finally:
        context.close()
