"""The seeded workload: users, the call mix, and the attributes defined before the run.

Every call carries its own messageId and timestamp drawn from the seed, so two runs with one seed
send the same calls. Some trait and property names have an operator definition with a type (values
are coerced to it, some arrive as strings on purpose); the others are left to traffic, which defines
them as strings the first time they are seen.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

MIX = {"track": 60, "page": 25, "identify": 10, "group": 5}
"""Call types and their weights, in percent."""
BASE_TIME = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
COMPANIES = 500


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute definition made before the run, as `userdest attributes define` makes it."""

    scope: str
    name: str
    type: str
    event: str = ""
    choices: tuple[str, ...] | None = None

    def label(self) -> str:
        where = f"event {self.event!r}" if self.scope == "event" else self.scope
        return f"{where}: {self.name} ({self.type})"


DEFINED = (
    Attribute("user", "plan", "fixed", choices=("free", "pro", "team")),
    Attribute("user", "logins", "integer"),
    Attribute("user", "lifetime_value", "float"),
    Attribute("user", "signed_up", "date"),
    Attribute("company", "employees", "integer"),
    Attribute("event", "revenue", "float", event="Order Completed"),
    Attribute("event", "items", "integer", event="Order Completed"),
)
UNDEFINED = (
    "user: favourite_colour, newsletter",
    "company: industry, plan",
    "events: sku, price, category, coupon, currency, button, section, method, query, results",
)
"""Names sent without a definition: traffic defines each as a string on first sight."""

EVENTS = {
    "Product Viewed": 30,
    "Button Clicked": 25,
    "Product Added": 15,
    "Search Performed": 15,
    "Signed In": 10,
    "Order Completed": 5,
}
PAGES = ("/", "/pricing", "/docs", "/docs/start", "/blog", "/blog/launch", "/signup", "/account")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
)


def generate(seed: int, users: int, count: int) -> list[dict[str, Any]]:
    """`count` calls in the bench mix over `users` users, the same for the same arguments."""
    rng = random.Random(seed)  # noqa: S311 (a reproducible workload, not a secret)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
    return [_call(rng, kind, i, rng.randrange(users)) for i, kind in enumerate(kinds)]


def _call(rng: random.Random, kind: str, i: int, user: int) -> dict[str, Any]:
    call: dict[str, Any] = {
        "type": kind,
        "userId": f"user-{user:05d}",
        "anonymousId": f"anon-{user:05d}",
        "messageId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "timestamp": (BASE_TIME + timedelta(milliseconds=250 * i)).isoformat(
            timespec="milliseconds"
        ),
        "context": {
            "library": {"name": "analytics.js", "version": "5.2.0"},
            "ip": f"203.0.113.{user % 250}",
            "userAgent": USER_AGENTS[user % len(USER_AGENTS)],
            "locale": "en-GB",
        },
    }
    if kind == "track":
        event = rng.choices(list(EVENTS), weights=list(EVENTS.values()))[0]
        call |= {"event": event, "properties": _properties(rng, event)}
    elif kind == "page":
        path = rng.choice(PAGES)
        call |= {
            "name": path.strip("/").split("/")[0].title() or "Home",
            "properties": {
                "url": f"https://www.example.com{path}",
                "path": path,
                "title": f"Example {path}",
                "referrer": rng.choice(("", "https://www.google.com/", "https://news.example/")),
            },
        }
    elif kind == "identify":
        call["traits"] = {
            "email": f"user-{user:05d}@example.com",
            "firstName": rng.choice(("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken")),
            "plan": rng.choice(("free", "free", "pro", "team")),
            "logins": rng.randrange(1, 500),
            "lifetime_value": f"{rng.uniform(0, 2000):.2f}",  # a string, coerced to float
            "signed_up": f"2025-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            "favourite_colour": rng.choice(("red", "green", "blue")),
            "newsletter": rng.random() < 0.5,
        }
    else:
        company = user % COMPANIES
        call |= {
            "groupId": f"company-{company:04d}",
            "traits": {
                "name": f"Company {company}",
                "employees": str(10 + company % 990),  # a string, coerced to integer
                "industry": rng.choice(("software", "retail", "finance")),
                "plan": rng.choice(("free", "pro", "team")),
            },
        }
    return call


def _properties(rng: random.Random, event: str) -> dict[str, Any]:
    if event in ("Product Viewed", "Product Added"):
        return {
            "sku": f"sku-{rng.randrange(500):03d}",
            "price": round(rng.uniform(5, 200), 2),
            "category": rng.choice(("books", "games", "music")),
        }
    if event == "Order Completed":
        return {
            "revenue": round(rng.uniform(10, 500), 2),
            "items": rng.randrange(1, 6),
            "coupon": rng.choice((None, "WELCOME", "SPRING")),
            "currency": "EUR",
        }
    if event == "Button Clicked":
        return {"button": f"btn-{rng.randrange(40)}", "section": rng.choice(("hero", "footer"))}
    if event == "Signed In":
        return {"method": rng.choice(("password", "google", "sso"))}
    return {"query": f"query {rng.randrange(1000)}", "results": rng.randrange(0, 50)}
