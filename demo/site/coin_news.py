"""The demo coin news site: 36 articles on 3 listing pages, generated from a fixed seed, plus a
declared set of broken and hostile articles.

`/coins/news/page/<n>.html` lists 12 articles (newest first) with a "next" link; each links to
`/coins/news/<slug>.html`, whose page embeds a schema.org NewsArticle as JSON-LD (headline,
datePublished, dateModified, author, keywords: the coins it is about), has a canonical link
holding the article id, and shows the section, the body and a "Sentiment: 0.42" line. Each
article holds what its page shows; `expected_item` is what a faithful crawler extracts.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from urllib.parse import urljoin

from demo.site.coins import KST, SEED, level

NEWS_PAGE_SIZE = 12
NEWS_TOTAL = 36
# The newest article's time; each older one is 5 h 37 min before the next.
NEWS_LATEST = datetime(2025, 6, 14, 6, 30, tzinfo=UTC)
SECTIONS = ("Markets", "Regulation", "Technology", "Opinion")
COIN_NAMES = {"BTC": "Bitcoin", "ETH": "Ether", "SOL": "Solana", "XRP": "XRP", "ADA": "Cardano"}
# fmt: off
_UP = ("climbs 4%", "hits a one-month high", "extends gains", "rebounds", "outpaces the market")
_DOWN = ("slips 3%", "falls below key support", "gives back gains", "drifts lower", "lags the market")
_REASONS = (
    "ETF inflows pick up", "traders eye the Fed", "exchange volumes thin out", "a large wallet moves funds",
    "the Korean premium widens", "options expiry nears", "a network upgrade ships",
    "regulators weigh new rules",
)
_AUTHORS = ("Min-jun Kim", "Sarah Collins", "Daniel Park", "Ji-woo Choi", "Tom Becker", "Aiko Tanaka")
_CLOSERS = (
    "Analysts expect volatility to stay elevated into the weekend.",
    "Funding rates on the major derivatives venues were little changed.",
    "Retail activity on Korean exchanges remained the main driver.",
    "Desk traders said liquidity was thinner than usual.",
)
# fmt: on


@dataclass(frozen=True)
class DemoArticle:
    """One article of the news site, as its page shows it (None: the page has no such element).

    `published` / `modified` are the JSON-LD's text as written; `sentiment` the text after
    "Sentiment: " (None: no sentiment line). `invalid` names the item fields that make it fail
    validation (empty: valid); `note` says what the case is about.
    """

    slug: str
    article_id: str | None  # in the page's canonical link
    headline: str | None
    published: str | None
    author: str | None
    section: str | None
    coins: tuple[str, ...] | None
    sentiment: str | None
    body: tuple[str, ...]
    modified: str | None = None
    jsonld_broken: bool = False
    canonical: bool = True
    invalid: frozenset[str] = field(default_factory=frozenset)
    note: str = ""

    @property
    def path(self) -> str:
        return f"/coins/news/{self.slug}.html"

    @property
    def label(self) -> str:
        """How the manifest names this article: the id its URL gives it, even when the page's is broken."""
        return label_of_article_url(self.path)

    def expected_item(self, base_url: str, source: str) -> dict[str, Any]:
        """The item dict a faithful crawl of `base_url` yields for this article (no crawled_at)."""
        ld = not self.jsonld_broken
        match = re.search(r"[-+]?\d+(?:\.\d+)?", self.sentiment or "")
        return {
            "source": source,
            "article_id": self.article_id if self.canonical else None,
            "headline": self.headline if ld else None,
            "published_at": _utc(self.published) if ld else None,
            "modified_at": _utc(self.modified) if ld else None,
            "author": self.author if ld else None,
            "section": self.section,
            "coins": list(self.coins) if ld and self.coins is not None else None,
            "sentiment": float(match.group(0)) if match else None,
            "body": "\n".join(self.body) or None,
            "url": urljoin(base_url, self.path),
        }


def label_of_article_url(url: str) -> str:
    """`n1001` for .../coins/news/n1001-some-headline.html."""
    return url.rsplit("/", 1)[-1].removesuffix(".html").split("-", 1)[0]


def _utc(text: str | None) -> str | None:
    """A JSON-LD time as the crawl reads it: UTC ISO 8601, or the text as it was."""
    try:
        moment = datetime.fromisoformat(text) if text else None
    except ValueError:
        return text
    return moment.astimezone(UTC).isoformat() if moment and moment.tzinfo else text


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60].rstrip("-")


def _generated(number: int, published: datetime) -> DemoArticle:
    """One ordinary, valid article."""
    rng = random.Random(f"{SEED}:news:{number}")  # noqa: S311 (demo data)
    # Coin and reason by number (5 and 8 coprime), so no two of the first 40 headlines are alike.
    coin = tuple(COIN_NAMES)[number % len(COIN_NAMES)]
    reason = _REASONS[number % len(_REASONS)]
    others = [c for c in rng.sample(tuple(COIN_NAMES), 3) if c != coin][: rng.randint(0, 2)]
    up = rng.random() < 0.55
    move = rng.choice(_UP if up else _DOWN)
    headline = f"{COIN_NAMES[coin]} {move} as {reason}"
    section = "Regulation" if "regulators" in reason else "Technology" if "upgrade" in reason else "Markets"
    price = level(f"KRW-{coin}", published)
    name = COIN_NAMES[coin] if COIN_NAMES[coin] == coin else f"{COIN_NAMES[coin]} ({coin})"
    body = [
        f"{name} {move} on {published:%d %B}, as {reason}.",
        f"On the KRW market {coin} changed hands near ₩{price:,.0f} at the time of writing.",
    ]
    if others:
        body.append(f"{' and '.join(COIN_NAMES[c] for c in others)} moved in sympathy.")
    body.append(rng.choice(_CLOSERS))
    score = rng.uniform(0.1, 0.9) * (1 if up else -1)
    modified = published + timedelta(hours=2) if rng.random() < 0.3 else None
    article_id = f"n{1000 + number}"
    return DemoArticle(
        slug=f"{article_id}-{slugify(headline)}",
        article_id=article_id,
        headline=headline,
        published=published.isoformat(),
        author=rng.choice(_AUTHORS),
        section=section,
        coins=(coin, *others),
        sentiment=f"{score:.2f}",
        body=tuple(body),
        modified=modified.isoformat() if modified else None,
    )


_Change = Callable[[DemoArticle], dict[str, Any]]
_SCRIPT = '</script><script>alert("xss")</script> Bitcoin "to the moon" & beyond'
# Edge cases by article number (1-based listing position): slug suffix, change to the generated
# article there, the item fields that then fail, and what the case is about. Five on page 1, so
# a short crawl and the saved fixture pages meet broken and hostile articles too.
_EDGES: dict[int, tuple[str, _Change, set[str], str]] = {
    2: (
        "edge-script-headline",
        lambda a: {
            "headline": _SCRIPT,
            "coins": ("BTC",),
            "body": ("Readers sent us <img src=x onerror=alert(1)> again.", "Bitcoin traders shrugged."),
        },
        set(),
        "markup and </script> in headline and body: valid, stored verbatim (escaped in HTML and JSON-LD)",
    ),
    4: ("edge-no-headline", lambda a: {"headline": None}, {"headline"}, "no headline anywhere on the page"),
    6: (
        "edge-korean",
        lambda a: {
            "headline": "비트코인 1억 4500만 원 돌파… 김치 프리미엄 확대 🚀",
            "author": "김민준",
            "section": "Markets",
            "published": datetime.fromisoformat(a.published or "").astimezone(KST).isoformat(),
            "modified": None,
            "coins": ("BTC",),
            "body": (
                "비트코인이 원화 시장에서 1억 4500만 원을 넘어섰다.",
                "김치 프리미엄은 2%대로 확대됐다.",
            ),
        },
        set(),
        "Korean text, an emoji and a +09:00 time: valid, the time normalised to UTC",
    ),
    8: (
        "edge-bad-date",
        lambda a: {"published": "yesterday, 3pm", "modified": None},
        {"published_at"},
        "datePublished is not a time",
    ),
    10: (
        "edge-broken-jsonld",
        lambda a: {"jsonld_broken": True},
        {"headline", "published_at"},
        "the JSON-LD block is not JSON: headline, date, author and coins all missing",
    ),
    14: ("edge-sentiment-na", lambda a: {"sentiment": "n/a"}, set(), "sentiment line without a score: valid"),
    16: ("edge-sentiment-over", lambda a: {"sentiment": "1.70"}, {"sentiment"}, "sentiment above 1"),
    19: (
        "edge-no-coins",
        lambda a: {
            "headline": "Why exchange listings still move prices",
            "section": "Opinion",
            "coins": None,
            "sentiment": "0.00",
        },
        set(),
        "an opinion piece about no coin in particular (no keywords): valid",
    ),
    22: (
        "edge-modified-before-published",
        lambda a: {"modified": "2025-06-01T00:00:00+00:00"},
        {"published_at", "modified_at"},
        "dateModified before datePublished",
    ),
    26: (
        "edge-sql-author",
        lambda a: {"author": "Robert'); DROP TABLE news_articles;--"},
        set(),
        "SQL fragment as the author: valid, stored verbatim",
    ),
    29: (
        "edge-no-canonical",
        lambda a: {"canonical": False},
        {"article_id"},
        "no canonical link: no article id",
    ),
    33: (
        "edge-headline-300",
        lambda a: {"headline": ("Ether " * 50)[:299] + "!"},
        set(),
        "headline exactly at the 300-character limit: valid",
    ),
}


@cache
def articles() -> tuple[DemoArticle, ...]:
    """Every article, newest first (listing order); the same every run."""
    listing = []
    for index in range(NEWS_TOTAL):
        number = index + 1
        base = _generated(number, NEWS_LATEST - index * timedelta(hours=5, minutes=37))
        if edge := _EDGES.get(number):
            suffix, change, invalid, note = edge
            base = replace(
                base,
                slug=f"{base.article_id}-{suffix}",
                invalid=frozenset(invalid),
                note=note,
                **change(base),
            )
        listing.append(base)
    return tuple(listing)


@cache
def article_by_slug() -> dict[str, DemoArticle]:
    return {a.slug: a for a in articles()}


def news_page_count() -> int:
    return -(-NEWS_TOTAL // NEWS_PAGE_SIZE)


def news_page(number: int) -> tuple[DemoArticle, ...]:
    """The articles listed on page `number` (1-based); empty past the last page."""
    if number < 1:
        return ()
    start = (number - 1) * NEWS_PAGE_SIZE
    return articles()[start : start + NEWS_PAGE_SIZE]
