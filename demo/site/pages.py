"""Render the demo site's responses from the generated data: the shop's HTML pages and product
images, the coin news site, robots.txt and the JSON APIs (sensor readings, coin ticker). Pure
functions of the request path and query, so the same request gets the same bytes every run and
tests can render pages without a server."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import parse_qs, urlsplit

from demo.site import catalogue, coin_news, coins, sensors
from demo.site.catalogue import DemoProduct
from demo.site.coin_news import DemoArticle

HTML = "text/html; charset=utf-8"
JSON = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

ROBOTS_TXT = f"""\
# The demo shop welcomes polite crawlers to its catalogue and API.
User-agent: *
Disallow: /admin/
Disallow: {catalogue.ROBOTS_BLOCKED_PATH.rsplit("/", 1)[0]}/
Allow: /
"""


@dataclass(frozen=True)
class Page:
    status: int
    content_type: str
    body: bytes
    location: str | None = None


def _e(text: str) -> str:
    return escape(text, quote=True)


def money(value: str, symbol: str) -> str:
    """How the shop shows an amount: "€1,299.00", "-€5.00"; text that isn't a number as is."""
    match = re.fullmatch(r"(-?)(\d+)(\.\d+)?", value)
    if not match:
        return value
    sign, whole, fraction = match.groups()
    return f"{sign}{symbol}{int(whole):,}{fraction or ''}"


def _count(value: int | str) -> str:
    return f"{value:,}" if isinstance(value, int) else value


def _layout(title: str, main: str, site: str = "Demo Shop", head: str = "") -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{_e(title)} | {_e(site)}</title>{head}
</head>
<body>
  <header class="site-header"><a class="home" href="/">{_e(site)}</a></header>
  <main>
{main}
  </main>
  <footer class="site-footer"><a href="/robots.txt">robots.txt</a> · <a href="/admin/">Staff</a></footer>
</body>
</html>
"""


def _card(product: DemoProduct, href: str) -> str:
    price = (
        f'\n      <p class="card-price">{_e(money(product.price, product.symbol))}</p>'
        if product.price is not None
        else ""
    )
    title = _e(product.name) if product.name is not None else "(untitled)"
    return f"""    <li class="product-card">
      <a class="product-link" href="{_e(href)}"><span class="product-title">{title}</span></a>{price}
    </li>"""


def listing(number: int) -> Page:
    products = catalogue.page(number)
    last = catalogue.page_count()
    if not products:
        return not_found()
    cards = [_card(p, f"../product/{p.slug}.html") for p in products]
    if number == 1:
        blocked = catalogue.ROBOTS_BLOCKED
        cards.append(_card(blocked, f"../private/{blocked.slug}.html"))
    main = f"""    <h1>All products</h1>
    <p class="result-count">{len(catalogue.products()):,} products</p>
    <ol class="product-list">
{chr(10).join(cards)}
    </ol>
{_pager(number, last)}"""
    return _html(_layout(f"All products, page {number}", main))


def _pager(number: int, last: int) -> str:
    pager = [f'      <li class="current">Page {number} of {last}</li>']
    if number > 1:
        pager.insert(0, f'      <li class="previous"><a href="{number - 1}.html">previous</a></li>')
    if number < last:
        pager.append(f'      <li class="next"><a href="{number + 1}.html">next</a></li>')
    return f"""    <nav class="pager">
      <ul>
{chr(10).join(pager)}
      </ul>
    </nav>"""


def _row(css_class: str, label: str, value: str | None, itemprop: str = "") -> str:
    if value is None:
        return ""
    prop = f' itemprop="{itemprop}"' if itemprop else ""
    return f'\n        <tr><th>{label}</th><td class="{css_class}"{prop}>{_e(value)}</td></tr>'


def detail(product: DemoProduct) -> Page:
    p = product
    parts: list[str] = []
    if p.image is not None:
        parts.append(f'      <img class="product-image" itemprop="image" src="{_e(p.image)}" alt="">')
    if p.name is not None:
        # Whitespace around the name, as templating engines leave it: crawlers must strip it.
        parts.append(f'      <h1 class="product-name" itemprop="name">\n        {_e(p.name)}\n      </h1>')
    rows = (
        _row("sku", "SKU", p.product_id, "sku")
        + _row("brand", "Brand", p.brand, "brand")
        + _row("category", "Category", p.category)
    )
    parts.append(f'      <table class="product-info">{rows}\n      </table>')
    offer = []
    if p.currency is not None:
        offer.append(f'        <meta itemprop="priceCurrency" content="{_e(p.currency)}">')
    prices = []
    if p.price is not None:
        tag = "del" if p.sale_price is not None else "span"
        prices.append(f'<{tag} class="price-regular">{_e(money(p.price, p.symbol))}</{tag}>')
    if p.sale_price is not None:
        prices.append(f'<ins class="price-sale" itemprop="price">{_e(money(p.sale_price, p.symbol))}</ins>')
    offer.append(f'        <p class="price">{" ".join(prices)}</p>')
    parts.append(
        '      <div class="offer" itemprop="offers" itemscope itemtype="https://schema.org/Offer">\n'
        + "\n".join(offer)
        + "\n      </div>"
    )
    reviews = []
    if p.rating is not None:
        reviews.append(
            f'        <p class="rating"><span class="rating-value">{_e(str(p.rating))}</span> out of 5</p>'
        )
    if p.review_count is not None:
        reviews.append(
            f'        <p><span class="review-count">{_e(_count(p.review_count))}</span> reviews</p>'
        )
    if reviews:
        parts.append('      <div class="reviews">\n' + "\n".join(reviews) + "\n      </div>")
    main = (
        '    <nav class="breadcrumb"><a href="../page/1.html">Catalogue</a></nav>\n'
        '    <article class="product" itemscope itemtype="https://schema.org/Product">\n'
        + "\n".join(parts)
        + "\n    </article>"
    )
    return _html(_layout(p.name if p.name is not None else "Product", main))


def index() -> Page:
    main = """    <h1>Demo Shop</h1>
    <p>A generated shop, sensor API, coin ticker and coin news site for crawlstore's demo and tests.</p>
    <ul class="entry-points">
      <li><a href="/catalogue/page/1.html">Catalogue</a></li>
      <li><a href="/api/readings">Sensor readings (JSON)</a></li>
      <li><a href="/coins/news/page/1.html">Coin news</a></li>
      <li><a href="/api/coins/ticker">Coin ticker (JSON)</a></li>
    </ul>"""
    return _html(_layout("Welcome", main))


def admin() -> Page:
    # Served to anyone; only robots.txt asks crawlers to stay away.
    return _html(_layout("Staff area", "    <h1>Staff area</h1>\n    <p>Nothing for robots here.</p>"))


def image(product: DemoProduct) -> Page:
    hue = sum(product.slug.encode()) % 360
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="120" viewBox="0 0 120 120">'
        f'<rect width="120" height="120" fill="hsl({hue},55%,70%)"/></svg>\n'
    )
    return Page(200, "image/svg+xml", svg.encode())


def _parse_moment(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no timezone")
    return moment


def _window_api(
    query: str, now: datetime | None, records: Callable[[datetime, datetime], list[dict[str, Any]]]
) -> Page:
    """The records of [since, until) from the query; by default the last hour. 400 when bad."""
    params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    try:
        if "until" in params:
            until = _parse_moment(params["until"])
        else:
            until = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
        since = _parse_moment(params["since"]) if "since" in params else until - timedelta(hours=1)
        if since > until:
            raise ValueError("since is after until")
        found = records(since, until)
    except ValueError as exc:
        return _json({"error": str(exc)}, status=400)
    return _json(found)


def api_readings(query: str, now: datetime | None = None) -> Page:
    """`/api/readings?since=ISO&until=ISO`: readings in [since, until); by default the last hour."""
    return _window_api(query, now, lambda since, until: [r.record for r in sensors.readings(since, until)])


def api_ticker(query: str, now: datetime | None = None) -> Page:
    """`/api/coins/ticker?since=ISO&until=ISO`: quotes in [since, until); by default the last hour."""
    return _window_api(query, now, lambda since, until: [q.record for q in coins.quotes(since, until)])


NEWS = "Demo Coin News"


def _script_json(data: object) -> str:
    """JSON to embed in a <script>: `<`, `>` and `&` as \\u escapes, so no value can end the script."""
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def news_listing(number: int) -> Page:
    listed = coin_news.news_page(number)
    if not listed:
        return not_found()
    cards = []
    for a in listed:
        title = _e(a.headline) if a.headline is not None else "(untitled)"
        when = f' <time datetime="{_e(a.published)}">{_e(a.published)}</time>' if a.published else ""
        cards.append(
            f'      <li class="article-card"><a class="article-link" href="../{_e(a.slug)}.html">'
            f'<span class="article-title">{title}</span></a>{when}</li>'
        )
    main = f"""    <h1>Coin news</h1>
    <ol class="article-list">
{chr(10).join(cards)}
    </ol>
{_pager(number, coin_news.news_page_count())}"""
    return _html(_layout(f"Coin news, page {number}", main, site=NEWS))


def _json_ld(a: DemoArticle) -> str:
    data: dict[str, Any] = {"@context": "https://schema.org", "@type": "NewsArticle"}
    values = {
        "headline": a.headline,
        "datePublished": a.published,
        "dateModified": a.modified,
        "author": {"@type": "Person", "name": a.author} if a.author is not None else None,
        "articleSection": a.section,
        "keywords": list(a.coins) if a.coins is not None else None,
        "url": a.path,
        "publisher": {"@type": "Organization", "name": NEWS},
    }
    data.update({k: v for k, v in values.items() if v is not None})
    text = _script_json(data)
    if a.jsonld_broken:
        text = text[:-1] + ",}"  # a trailing comma: not JSON
    return f'\n  <script type="application/ld+json">{text}</script>'


def news_article(a: DemoArticle) -> Page:
    head = f'\n  <link rel="canonical" href="{_e(a.path)}">' if a.canonical else ""
    parts: list[str] = []
    if a.headline is not None:
        parts.append(f'      <h1 class="headline">{_e(a.headline)}</h1>')
    byline = []
    if a.author is not None:
        byline.append(f'By <span class="author">{_e(a.author)}</span>')
    if a.published is not None:
        byline.append(f'<time datetime="{_e(a.published)}">{_e(a.published)}</time>')
    if byline:
        parts.append(f'      <p class="byline">{" · ".join(byline)}</p>')
    if a.section is not None:
        parts.append(f'      <p class="section">{_e(a.section)}</p>')
    if a.coins:
        tags = "".join(f'<li class="coin">{_e(c)}</li>' for c in a.coins)
        parts.append(f'      <ul class="coins">{tags}</ul>')
    paragraphs = "\n".join(f"<p>{_e(p)}</p>" for p in a.body)
    parts.append(f'      <div class="article-body">{paragraphs}</div>')
    if a.sentiment is not None:
        parts.append(f'      <p class="sentiment">Sentiment: {_e(a.sentiment)}</p>')
    main = (
        '    <nav class="breadcrumb"><a href="page/1.html">Coin news</a></nav>\n'
        '    <article class="news-article">\n' + "\n".join(parts) + "\n    </article>"
    )
    title = a.headline if a.headline is not None else "Article"
    return _html(_layout(title, main, site=NEWS, head=head + _json_ld(a)))


def _json(data: object, status: int = 200) -> Page:
    return Page(status, JSON, json.dumps(data, ensure_ascii=False).encode())


def _html(text: str, status: int = 200) -> Page:
    return Page(status, HTML, text.encode())


def not_found() -> Page:
    return _html(_layout("Not found", "    <h1>Not found</h1>"), status=404)


def _product(match: re.Match[str]) -> Page:
    product = catalogue.by_slug().get(match.group(2))
    private = match.group(1) == "private"
    if product is None or private != (product is catalogue.ROBOTS_BLOCKED):
        return not_found()
    return detail(product)


def _image(match: re.Match[str]) -> Page:
    product = catalogue.by_slug().get(match.group(1))
    return image(product) if product else not_found()


def _article(match: re.Match[str]) -> Page:
    article = coin_news.article_by_slug().get(match.group(1))
    return news_article(article) if article else not_found()


def _redirect(location: str) -> Callable[[], Page]:
    return lambda: Page(301, TEXT, b"", location=location)


_FIXED: dict[str, Callable[[], Page]] = {
    "/": index,
    "/robots.txt": lambda: Page(200, TEXT, ROBOTS_TXT.encode()),
    "/catalogue": _redirect("/catalogue/page/1.html"),
    "/catalogue/": _redirect("/catalogue/page/1.html"),
    "/admin": admin,
    "/coins/news": _redirect("/coins/news/page/1.html"),
    "/coins/news/": _redirect("/coins/news/page/1.html"),
}
_PATTERNS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], Page]], ...] = (
    (re.compile(r"/catalogue/page/(\d{1,6})\.html"), lambda m: listing(int(m.group(1)))),
    (re.compile(r"/catalogue/(product|private)/([A-Za-z0-9_-]+)\.html"), _product),
    (re.compile(r"/static/img/([A-Za-z0-9_-]+)\.svg"), _image),
    (re.compile(r"/admin/.*"), lambda m: admin()),
    (re.compile(r"/coins/news/page/(\d{1,4})\.html"), lambda m: news_listing(int(m.group(1)))),
    (re.compile(r"/coins/news/(n\d{4}-[a-z0-9-]+)\.html"), _article),
)


def render(target: str, now: datetime | None = None) -> Page:
    """The response to GET `target` (path and query)."""
    parts = urlsplit(target)
    if parts.path == "/api/readings":
        return api_readings(parts.query, now)
    if parts.path == "/api/coins/ticker":
        return api_ticker(parts.query, now)
    if fixed := _FIXED.get(parts.path):
        return fixed()
    for pattern, page in _PATTERNS:
        if match := pattern.fullmatch(parts.path):
            return page(match)
    return not_found()
