"""The demo shop's products: generated from a fixed seed, plus a declared set of edge cases.

Each product holds the values a faithful crawler should extract (prices as plain decimal
strings, ratings as floats, broken values as the raw text the page shows); `pages` renders
them as the shop displays them. Edge cases say which item fields make them invalid, so the
manifest and the pages come from one declaration.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any
from urllib.parse import urljoin

SEED = 20240614
TOTAL_PRODUCTS = 1200
PAGE_SIZE = 24

SYMBOLS = {"EUR": "€", "GBP": "£", "USD": "$", "KRW": "₩"}

# Word lists for generated products, kept compact.
# fmt: off
_ADJECTIVES = (
    "Compact", "Classic", "Deluxe", "Eco", "Foldable", "Heavy-duty", "Lightweight", "Modern",
    "Portable", "Premium", "Quiet", "Rugged", "Slim", "Smart", "Vintage", "Wireless",
)
_MATERIALS = (
    "Bamboo", "Ceramic", "Cotton", "Glass", "Leather", "Linen", "Oak", "Steel", "Wool", "Copper",
)
_NOUNS = (
    "Backpack", "Blender", "Desk Lamp", "Headphones", "Kettle", "Notebook", "Planter", "Speaker",
    "Teapot", "Toolbox", "Umbrella", "Water Bottle", "Watering Can", "Wall Clock", "Yoga Mat",
    "Cutting Board", "Doormat", "Frying Pan", "Garden Hose", "Pet Bed",
)
_BRANDS = (
    "Acme", "Borealis", "Cobalt & Co", "Driftwood", "Evergreen", "Fjord", "Granite", "Halcyon",
    "Ironbark", "Juniper", "Kestrel", "Lumen", "Meridian", "Northwind", "Orchard", "Pinnacle",
)
_CATEGORIES = (
    "Kitchen", "Garden", "Audio", "Stationery", "Outdoor", "Sports", "Office", "Lighting", "Bathroom",
    "Tools", "Pets", "Home Decor",
)
# fmt: on


@dataclass(frozen=True)
class DemoProduct:
    """One product of the demo shop: the values a faithful crawler extracts from its page.

    `None` means the page has no element for the field. `invalid` names the item fields that
    make it fail validation (empty: a valid item); `note` says what the case is about.
    """

    slug: str
    product_id: str | None
    name: str | None
    price: str | None
    currency: str | None
    brand: str | None = None
    category: str | None = None
    sale_price: str | None = None
    symbol: str = "€"
    image: str | None = None
    rating: float | str | None = None
    review_count: int | str | None = None
    invalid: frozenset[str] = field(default_factory=frozenset)
    note: str = ""

    @property
    def path(self) -> str:
        return f"/catalogue/product/{self.slug}.html"

    @property
    def label(self) -> str:
        """How the manifest names this product: its id, or its slug when the id is broken."""
        return self.slug

    def expected_item(self, base_url: str, source: str) -> dict[str, Any]:
        """The item dict a faithful crawl of `base_url` yields for this product (no crawled_at)."""
        page_url = urljoin(base_url, self.path)
        return {
            "source": source,
            "product_id": self.product_id,
            "name": self.name,
            "brand": self.brand,
            "category": self.category,
            "price": self.price,
            "sale_price": self.sale_price,
            "currency": self.currency,
            "url": page_url,
            "image_url": urljoin(page_url, self.image) if self.image else None,
            "rating": self.rating,
            "review_count": self.review_count,
        }


def _image(slug: str) -> str:
    return f"../../static/img/{slug}.svg"


# Hand-written edge cases. The first six land on listing page 1 (see `products`), so a short
# crawl and the saved fixture pages meet broken and hostile items too.
_EDGE_CASES: tuple[DemoProduct, ...] = (
    DemoProduct(
        "EDGE-SQL-NAME",
        "EDGE-SQL-NAME",
        "Robert'); DROP TABLE products;--",
        "12.50",
        "EUR",
        brand="Bobby Tables",
        category="Books",
        image=_image("EDGE-SQL-NAME"),
        rating=4.0,
        review_count=17,
        note="SQL fragment in the name: valid, stored verbatim",
    ),
    DemoProduct(
        "EDGE-PRICE-TEXT",
        "EDGE-PRICE-TEXT",
        "Mystery Box",
        "abc",
        "EUR",
        brand="Acme",
        category="Toys",
        invalid=frozenset({"price"}),
        note="price is not a number",
    ),
    DemoProduct(
        "EDGE-SCRIPT-NAME",
        "EDGE-SCRIPT-NAME",
        '<script>alert("xss")</script> Gadget',
        "9.99",
        "GBP",
        symbol="£",
        brand="<b>Bold</b> & Co",
        category="Gadgets",
        image=_image("EDGE-SCRIPT-NAME"),
        rating=3.5,
        review_count=2,
        note="markup in name and brand: valid, stored verbatim (escaped only when displayed)",
    ),
    DemoProduct(
        "EDGE-TRAVERSAL-ID",
        "../../etc/passwd",
        "Path Finder",
        "5.00",
        "EUR",
        category="Tools",
        invalid=frozenset({"product_id"}),
        note="id with ../ pieces would escape a storage path",
    ),
    DemoProduct(
        "EDGE-KOREAN-NAME",
        "EDGE-KOREAN-NAME",
        "무선 이어폰 🎧 프로",
        "25000.00",
        "KRW",
        symbol="₩",
        brand="한빛전자",
        category="가전/오디오",
        image=_image("EDGE-KOREAN-NAME"),
        rating=4.8,
        review_count=1523,
        note="Korean text and an emoji: valid, stored verbatim",
    ),
    DemoProduct(
        "EDGE-MISSING-ID",
        None,
        "Nameless Widget",
        "3.99",
        "EUR",
        category="Tools",
        invalid=frozenset({"product_id"}),
        note="no SKU on the page",
    ),
    # Spread over the rest of the catalogue.
    DemoProduct(
        "EDGE-MISSING-NAME",
        "EDGE-MISSING-NAME",
        None,
        "15.00",
        "EUR",
        category="Kitchen",
        invalid=frozenset({"name"}),
        note="no name on the page",
    ),
    DemoProduct(
        "EDGE-MISSING-PRICE",
        "EDGE-MISSING-PRICE",
        "Priceless Vase",
        None,
        "EUR",
        category="Home Decor",
        invalid=frozenset({"price"}),
        note="no price on the page",
    ),
    DemoProduct(
        "EDGE-REVIEWS-TEXT",
        "EDGE-REVIEWS-TEXT",
        "Popular Mug",
        "8.00",
        "EUR",
        rating=4.1,
        review_count="many",
        invalid=frozenset({"review_count"}),
        note="review count is a word",
    ),
    DemoProduct(
        "EDGE-RATING-7",
        "EDGE-RATING-7",
        "Overrated Chair",
        "89.00",
        "EUR",
        rating=7.0,
        review_count=12,
        invalid=frozenset({"rating"}),
        note="rating above 5",
    ),
    DemoProduct(
        "EDGE-NEGATIVE-PRICE",
        "EDGE-NEGATIVE-PRICE",
        "Refund Voucher",
        "-5.00",
        "EUR",
        invalid=frozenset({"price"}),
        note="negative price",
    ),
    DemoProduct(
        "EDGE-SALE-ABOVE-PRICE",
        "EDGE-SALE-ABOVE-PRICE",
        "Upside-down Sale",
        "10.00",
        "EUR",
        sale_price="12.50",
        invalid=frozenset({"price", "sale_price"}),
        note="sale price above the regular price",
    ),
    DemoProduct(
        "EDGE-BAD-CURRENCY",
        "EDGE-BAD-CURRENCY",
        "Euro Coin Holder",
        "4.50",
        "EURO",
        invalid=frozenset({"currency"}),
        note="currency is not an ISO 4217 code",
    ),
    DemoProduct(
        "EDGE-LONG-NAME",
        "EDGE-LONG-NAME",
        ("Very long name " * 6700)[:99_999] + "!",
        "1.00",
        "EUR",
        invalid=frozenset({"name"}),
        note="100,000-character name",
    ),
    DemoProduct(
        "EDGE-PRICE-3-DECIMALS",
        "EDGE-PRICE-3-DECIMALS",
        "Fuel Can",
        "19.999",
        "EUR",
        invalid=frozenset({"price"}),
        note="price with three decimals",
    ),
    DemoProduct(
        "EDGE-PRICE-TOO-HIGH",
        "EDGE-PRICE-TOO-HIGH",
        "Private Island",
        "2000000000.00",
        "USD",
        symbol="$",
        invalid=frozenset({"price"}),
        note="price above the 1e9 ceiling",
    ),
    DemoProduct(
        "EDGE-NAN-PRICE",
        "EDGE-NAN-PRICE",
        "Undefined Gizmo",
        "NaN",
        "EUR",
        invalid=frozenset({"price"}),
        note="price is NaN",
    ),
    DemoProduct(
        "EDGE-JS-IMAGE",
        "EDGE-JS-IMAGE",
        "Clickbait Poster",
        "2.00",
        "EUR",
        image="javascript:alert(1)",
        invalid=frozenset({"image_url"}),
        note="javascript: image URL",
    ),
    DemoProduct(
        "EDGE-LONG-BRAND",
        "EDGE-LONG-BRAND",
        "Generic Spoon",
        "1.50",
        "EUR",
        brand="B" * 300,
        invalid=frozenset({"brand"}),
        note="300-character brand",
    ),
    DemoProduct(
        "EDGE-MANY-FAULTS",
        "EDGE-MANY-FAULTS",
        "Everything Wrong",
        "abc",
        None,
        rating=9.5,
        review_count=3,
        invalid=frozenset({"price", "rating", "currency"}),
        note="three broken fields at once",
    ),
    DemoProduct(
        "EDGE-DOTDOT-TEXT",
        "EDGE-DOTDOT-TEXT",
        "USB-C cable ../../ 2 m",
        "6.99",
        "EUR",
        brand="Cablecraft",
        category="Tools/../../etc",
        image=_image("EDGE-DOTDOT-TEXT"),
        note="../ inside name and category text: valid, stored verbatim",
    ),
    DemoProduct(
        "EDGE-QUOTES",
        "EDGE-QUOTES",
        "O'Brien's \"Best\" 100% \\ pure; --",
        "7.25",
        "EUR",
        brand="O'Brien",
        category="Pantry",
        note="quotes, backslash, percent: valid",
    ),
    DemoProduct(
        "EDGE-NAME-500",
        "EDGE-NAME-500",
        "N" * 500,
        "11.00",
        "EUR",
        note="name exactly at the 500-character limit: valid",
    ),
    DemoProduct(
        "EDGE-FREE",
        "EDGE-FREE",
        "Free Sticker",
        "0.00",
        "EUR",
        category="Stationery",
        note="price zero: valid",
    ),
    DemoProduct(
        "EDGE-SALE-EQUALS-PRICE",
        "EDGE-SALE-EQUALS-PRICE",
        "Fake Discount",
        "20.00",
        "EUR",
        sale_price="20.00",
        note="sale price equal to price: valid",
    ),
    DemoProduct(
        "EDGE-BARE",
        "EDGE-BARE",
        "Plain Box",
        "3.00",
        "EUR",
        note="only the required fields: valid",
    ),
    DemoProduct(
        "EDGE-RATING-BOUNDS",
        "EDGE-RATING-BOUNDS",
        "Perfect Pen",
        "2.49",
        "GBP",
        symbol="£",
        rating=5.0,
        review_count=0,
        note="rating 5 with zero reviews: valid",
    ),
)

# Listed on page 1 but under a path robots.txt disallows: an obedient crawler never fetches it.
ROBOTS_BLOCKED = DemoProduct(
    "EDGE-ROBOTS-PRIVATE",
    "EDGE-ROBOTS-PRIVATE",
    "Staff Preview",
    "1.00",
    "EUR",
    note="behind a robots.txt Disallow",
)
ROBOTS_BLOCKED_PATH = f"/catalogue/private/{ROBOTS_BLOCKED.slug}.html"


def _generated(rng: random.Random, number: int) -> DemoProduct:
    """One ordinary, valid product."""
    product_id = f"P{number:05d}"
    currency = rng.choices(("EUR", "GBP", "USD"), weights=(7, 2, 1))[0]
    # Log-uniform between 1.99 and 2,500: many cheap things, a few expensive ones.
    cents = round(math.exp(rng.uniform(math.log(199), math.log(250_000))))
    price = Decimal(cents) / 100
    sale = None
    if rng.random() < 0.25:
        sale_cents = max(1, int(cents * rng.uniform(0.5, 0.95)))
        sale = f"{Decimal(sale_cents) / 100:.2f}"
    rating: float | None = None
    reviews: int | None = None
    if rng.random() < 0.85:
        rating = round(rng.uniform(1, 5), 1)
        reviews = rng.randint(0, 4000)
    name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_MATERIALS)} {rng.choice(_NOUNS)}"
    return DemoProduct(
        slug=product_id,
        product_id=product_id,
        name=f"{name} {rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}{rng.randint(1, 99)}",
        brand=rng.choice(_BRANDS) if rng.random() < 0.95 else None,
        category=rng.choice(_CATEGORIES),
        price=f"{price:.2f}",
        sale_price=sale,
        currency=currency,
        symbol=SYMBOLS[currency],
        image=_image(product_id) if rng.random() < 0.95 else None,
        rating=rating,
        review_count=reviews,
    )


@cache
def products() -> tuple[DemoProduct, ...]:
    """Every listed product (robots-blocked one excluded), in listing order; same every run."""
    rng = random.Random(SEED)  # noqa: S311 (reproducible demo data, not secrets)
    ordinary = [_generated(rng, n) for n in range(1, TOTAL_PRODUCTS - len(_EDGE_CASES) + 1)]
    first_page, spread = _EDGE_CASES[:6], _EDGE_CASES[6:]
    listing: list[DemoProduct] = list(ordinary)
    # Insert at ascending positions so earlier insertions don't shift later ones' pages.
    positions = [1 + 4 * i for i in range(len(first_page))]
    step = (TOTAL_PRODUCTS - 2 * PAGE_SIZE) // len(spread)
    positions += [2 * PAGE_SIZE + 5 + step * i for i in range(len(spread))]
    for position, product in zip(positions, (*first_page, *spread), strict=True):
        listing.insert(position, product)
    return tuple(listing)


@cache
def by_slug() -> dict[str, DemoProduct]:
    return {p.slug: p for p in (*products(), ROBOTS_BLOCKED)}


def page_count() -> int:
    return -(-len(products()) // PAGE_SIZE)


def page(number: int) -> tuple[DemoProduct, ...]:
    """The products listed on page `number` (1-based); empty past the last page."""
    if number < 1:
        return ()
    start = (number - 1) * PAGE_SIZE
    return products()[start : start + PAGE_SIZE]
