"""A real browser (headless Chromium) posting from a site to the real stack, with the exact requests
analytics.js and RudderStack's JS SDK make: the preflights must pass, the answers' headers must be
readable, and the calls must reach the profile.

The first test makes the requests as the libraries write them (analytics-next
`packages/browser/src/plugins/segmentio/fetch-dispatcher.ts` and `batched-dispatcher.ts`;
rudder-sdk-js `packages/analytics-js-plugins/src/xhrQueue/utilities.ts` and
`packages/analytics-js/src/services/HttpClient/xhr/xhrRequestHandler.ts`). The second loads the
real analytics.js 1.84.3 (npm, tests/browser/package.json) against a rate-limited receiver, so that
it must retry with X-Retry-Count. Skipped where Chromium, the playwright package or (the second)
the npm package is missing: `apt-get install chromium`; `pip install playwright` (it drives the
system Chromium and downloads no browser); `npm ci --prefix tests/browser`. No page.route() here:
with interception on, Playwright answers CORS preflights itself and would hide what is tested.
"""

from __future__ import annotations

import http.server
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared.tenancy import add_domain, create_key, new_app
from tests.support.stack import serving, wait_for

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE = b"""<!doctype html><html><head><title>Shop</title></head><body><script>
// analytics.js: fetch, Content-Type text/plain, Basic auth from the writeKey, X-Retry-Count on retries
async function ajs(api, path, body, retry) {
  const headers = {'Content-Type': 'text/plain', 'Authorization': 'Basic ' + btoa(body.writeKey + ':')};
  if (retry) headers['X-Retry-Count'] = String(retry);
  const res = await fetch(api + path, {method: 'post', headers, body: JSON.stringify(body), keepalive: false});
  return {status: res.status, requestId: res.headers.get('X-Request-Id'), body: await res.json()};
}
// RudderStack JS: XMLHttpRequest, JSON content type, AnonymousId, SentAt and Rsa-* retry headers
function rudder(api, path, body, writeKey, retry) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', api + path, true);
    const headers = {'Accept': 'application/json', 'Content-Type': 'application/json;charset=UTF-8',
                     'Authorization': 'Basic ' + btoa(writeKey + ':'),
                     'AnonymousId': btoa(body.anonymousId), 'SentAt': body.sentAt};
    if (retry) Object.assign(headers, {'Rsa-Retry-Attempt': '1', 'Rsa-Since-Last-Attempt': '1200',
      'Rsa-Since-First-Attempt': '1200', 'Rsa-Retry-Reason': 'server-503', 'Rsa-Recovered': 'true'});
    for (const name in headers) xhr.setRequestHeader(name, headers[name]);
    xhr.onload = () => resolve({status: xhr.status, requestId: xhr.getResponseHeader('X-Request-Id')});
    xhr.onerror = () => resolve({status: 0, requestId: null});
    xhr.send(JSON.stringify(body));
  });
}
</script></body></html>"""

SEND = """async ([api, key]) => {
  const hints = navigator.userAgentData ? navigator.userAgentData.toJSON() : undefined;
  const context = {library: {name: 'analytics.js', version: 'next-1.84.3'}, userAgent: navigator.userAgent,
                   userAgentData: hints, page: {url: location.href, path: '/shop.html', title: document.title}};
  const now = new Date().toISOString();
  const call = (type, extra) => ({type, anonymousId: 'browser-anon', writeKey: key, context,
                                  messageId: 'ajs-next-' + type + '-' + Math.random(), sentAt: now, ...extra});
  const results = {};
  results.page = await ajs(api, '/v1/p', call('page', {name: 'Shop'}), 0);
  results.trackRetry = await ajs(api, '/v1/t', call('track', {event: 'Viewed'}), 2);
  results.batchRetry = await ajs(api, '/v1/b', {writeKey: key, sentAt: now,
                                                batch: [call('track', {event: 'Batched'})]}, 1);
  const rs = {type: 'page', anonymousId: 'browser-anon', channel: 'web', name: 'Shop', event: null,
              properties: {url: location.href, referrer: '$direct'}, sentAt: now,
              context: {...context, library: {name: 'RudderLabs JavaScript SDK', version: '3.34.1'},
                        app: {name: 'RudderLabs JavaScript SDK', namespace: 'com.rudderlabs.javascript'},
                        traits: {}},
              integrations: {All: true}, messageId: 'rs-' + Math.random(), originalTimestamp: now};
  results.rudder = await rudder(api, '/v1/page', rs, key, false);
  results.rudderRetry = await rudder(api, '/v1/page', {...rs, messageId: 'rs-' + Math.random()}, key, true);
  results.hints = hints || null;
  return results;
}"""


ANALYTICS_JS = Path(__file__).resolve().parents[1] / "browser/node_modules/@segment/analytics-next"
"""The real analytics.js (npm @segment/analytics-next, pinned in tests/browser/package.json)."""
UMD = ANALYTICS_JS / "dist/umd"

AJS_PAGE = b"""<!doctype html><html><head><title>Shop</title>
<script src="/ajs/index.js"></script></head><body></body></html>"""

AJS_SEND = """async ([apiHost, key, cdnURL]) => {
  const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(
    {writeKey: key, cdnURL,
     cdnSettings: {integrations: {'Segment.io': {apiKey: key, apiHost, protocol: 'http'}}}},
    {disableClientPersistence: true});
  await analytics.page('Shop');
  await analytics.identify('ajs-user', {email: 'ajs@example.com', plan: 'pro'});
  await analytics.track('First', {n: 1});
  await analytics.track('Second', {n: 2});
  return true;
}"""


@pytest.fixture
def site() -> Iterator[str]:
    """A page served from its own origin (another port), as a shop's site would be; /ajs/NAME
    and /analytics-next/bundles/NAME (where analytics.js loads its lazy chunks from, given this
    origin as its cdnURL) serve the real analytics.js build."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith(("/ajs/", "/analytics-next/bundles/")):
                body, kind = (UMD / Path(self.path).name).read_bytes(), "text/javascript"
            else:
                body, kind = (AJS_PAGE if self.path == "/ajs.html" else PAGE), "text/html"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        yield url


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium)")
def test_browser_libraries_requests_pass_cors_and_reach_the_profile(
    stack: str, site: str, clean_db: Engine
) -> None:
    with Session(clean_db) as session:
        app = new_app(session, "browser")
        key = create_key(session, app).api_key
        add_domain(session, app, "127.0.0.1")  # the site's host; the receiver is another origin
        session.commit()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(f"{site}/shop.html")
            results = page.evaluate(SEND, [stack, key])
        finally:
            browser.close()

    for name in ("page", "trackRetry", "batchRetry", "rudder", "rudderRetry"):
        assert results[name]["status"] == 200, (name, results[name])
        assert results[name]["requestId"], f"{name}: X-Request-Id is not exposed"
    assert results["batchRetry"]["body"] == {"success": True, "accepted": 1, "rejected": []}

    def settled() -> bool:
        with clean_db.connect() as conn:
            done = conn.scalar(text("SELECT count(*) FROM processed_messages"))
            letters = conn.scalar(text("SELECT count(*) FROM dead_letters"))
        return done + letters >= 5

    wait_for(settled, timeout=120, what="the worker to take the browser's five calls")
    with clean_db.connect() as conn:
        letters = conn.execute(text("SELECT reason, error FROM dead_letters")).all()
        assert letters == []
        assert conn.scalar(text("SELECT count(*) FROM processed_messages")) == 5
        user = conn.execute(text("SELECT * FROM users")).mappings().one()
    assert user["page_views"] == 3
    assert user["user_agent"].startswith("Mozilla/5.0")
    assert user["browser_family"]
    assert user["ip_address"] == "127.0.0.1"  # the request's address: the browser posted directly
    if results["hints"]:  # Chromium sends client hints on a secure (localhost) origin
        assert user["os"] == results["hints"]["platform"]


@pytest.fixture
def rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    """One call a second per key, and Retry-After: 1, so that analytics.js must retry."""
    monkeypatch.setenv("RATE_LIMIT_PER_SECOND", "1")
    monkeypatch.setenv("RATE_LIMIT_BURST", "1")
    monkeypatch.setenv("RETRY_AFTER_SECONDS", "1")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium)")
@pytest.mark.skipif(
    not (UMD / "index.js").exists(),
    reason="analytics.js is not installed (npm install --prefix tests/browser)",
)
def test_the_real_analytics_js_retries_through_cors_after_a_429(
    rate_limited: None, stack: str, site: str, clean_db: Engine
) -> None:
    """analytics.js 1.84.3 itself, rate limited: every 429 is retried with X-Retry-Count, which the
    preflight must allow, after the Retry-After it must be able to read. All four calls arrive."""
    with Session(clean_db) as session:
        app = new_app(session, "ajs")
        key = create_key(session, app).api_key
        session.commit()
    api_host = stack.removeprefix("http://") + "/v1"
    retries: list[str] = []

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            # No page.route(): with interception on, Playwright answers CORS preflights itself.
            page.on(
                "request",
                lambda r: (
                    retries.append(r.headers["x-retry-count"])
                    if "x-retry-count" in r.headers
                    else None
                ),
            )
            page.goto(f"{site}/ajs.html")
            page.evaluate(AJS_SEND, [api_host, key, site])

            def settled() -> bool:
                with clean_db.connect() as conn:
                    done = conn.scalar(text("SELECT count(*) FROM processed_messages"))
                return done >= 4

            wait_for(settled, timeout=90, what="analytics.js's four calls, retries included")
        finally:
            browser.close()

    assert retries, "the rate limit never made analytics.js retry"
    with clean_db.connect() as conn:
        user = conn.execute(text("SELECT * FROM users")).mappings().one()
        events = sorted(
            conn.scalars(
                text("SELECT d.name FROM events e JOIN event_definitions d ON d.id = e.event_id")
            )
        )
    assert user["user_id"] == "ajs-user"
    assert user["email"] == "ajs@example.com"
    assert events == ["First", "Second"]
    assert user["page_views"] == 1
