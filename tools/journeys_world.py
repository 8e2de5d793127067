"""The static world of the synthetic clickstream: product catalogue, regions, names, time formats.

Pure Python; every random draw comes from the `random.Random` handed in, so the world is seeded.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

# category -> (lowest price, highest price, product nouns)
_CATEGORIES: dict[str, tuple[float, float, tuple[str, ...]]] = {
    "electronics": (9.0, 1800.0, ("headphones", "laptop", "smartphone", "charger", "smartwatch", "camera",
                                  "speaker")),
    "books": (4.0, 60.0, ("novel", "cookbook", "biography", "travel guide", "comic", "poetry collection")),
    "fashion": (8.0, 350.0, ("sneakers", "jacket", "dress", "jeans", "scarf", "sunglasses")),
    "home": (6.0, 1200.0, ("lamp", "sofa", "rug", "kettle", "bed linen", "plant pot")),
    "sports": (5.0, 900.0, ("yoga mat", "running shoes", "bike helmet", "tent", "dumbbells")),
    "beauty": (3.0, 150.0, ("lipstick", "shampoo", "perfume", "face cream", "nail polish")),
    "toys": (4.0, 250.0, ("puzzle", "building set", "doll", "board game", "rc car")),
    "grocery": (1.0, 60.0, ("coffee beans", "olive oil", "dark chocolate", "green tea", "pasta")),
}
CATEGORIES: tuple[str, ...] = tuple(_CATEGORIES)
_ADJECTIVES = ("classic", "compact", "deluxe", "eco", "pro", "mini", "vintage", "smart", "ultra", "everyday")

FX: dict[str, float] = {"EUR": 1.0, "GBP": 0.86, "USD": 1.08}

FIRST_NAMES = ("Robert", "Elizabeth", "William", "Katherine", "Alexander", "Margaret", "José", "Zoë",
               "Łukasz", "Søren", "Chloé", "Amara", "Hiroshi", "Priya", "Mateo", "Ingrid", "Kwame", "Fatima",
               "Noah", "Mia")
NICKNAMES = {"Robert": "Bob", "Elizabeth": "Liz", "William": "Bill", "Katherine": "Kate", "Alexander": "Alex",
             "Margaret": "Maggie", "José": "Pepe", "Łukasz": "Luke"}
LAST_NAMES = ("Smith", "Müller", "García", "Rossi", "Dubois", "Nowak", "Jensen", "Okafor", "Tanaka", "Patel",
              "O'Brien", "van Dijk", "Kowalski", "Silva", "Nguyen", "Johansson", "Mensah", "Haddad")
TIERS = ("bronze", "silver", "gold", "platinum")
REFERRERS = ("", "", "https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/",
             "https://t.co/", "https://www.instagram.com/", "https://news.example.org/best-deals")
CAMPAIGNS = ("spring_sale", "black_friday", "newsletter_weekly", "winback", "new_arrivals")
SITE = "https://shop.example.com"


@dataclass(frozen=True, slots=True)
class Product:
    """One catalogue item (prices in EUR; converted to the shopper's currency when shown)."""

    product_id: str
    category: str
    name: str
    price_eur: float


@dataclass(frozen=True, slots=True)
class Region:
    """Where a shopper lives: fixed UTC offset (no DST), currency, cities."""

    offset_min: int
    currency: str
    cities: tuple[str, ...]


REGIONS: tuple[Region, ...] = (
    Region(60, "EUR", ("Berlin", "Paris", "Madrid", "Rome", "Amsterdam", "Vienna", "Málaga")),
    Region(0, "GBP", ("London", "Manchester", "Bristol", "Glasgow")),
    Region(-300, "USD", ("New York", "Boston", "Atlanta", "Miami")),
    Region(-480, "USD", ("Los Angeles", "Seattle", "San Francisco", "Portland")),
)


class Catalogue:
    """A seeded product catalogue spread evenly over :data:`CATEGORIES`."""

    def __init__(self, rng: random.Random, size: int):
        if size < len(CATEGORIES):
            raise ValueError(f"catalogue size must be at least {len(CATEGORIES)}")
        products = []
        for i in range(size):
            category = CATEGORIES[i % len(CATEGORIES)]
            low, high, nouns = _CATEGORIES[category]
            price = math.exp(rng.uniform(math.log(low), math.log(high)))
            name = f"{rng.choice(_ADJECTIVES)} {rng.choice(nouns)}"
            products.append(Product(f"sku-{i:05d}", category, name, max(0.99, round(price) - 0.01)))
        self.products: tuple[Product, ...] = tuple(products)
        self.by_category: dict[str, tuple[Product, ...]] = {
            c: tuple(p for p in products if p.category == c) for c in CATEGORIES}

    def pick(self, rng: random.Random, interests: tuple[str, ...]) -> Product:
        """A product, from the shopper's favourite categories 70% of the time."""
        if interests and rng.random() < 0.7:
            return rng.choice(self.by_category[rng.choice(interests)])
        return rng.choice(self.products)


def price_in(product: Product, currency: str) -> float:
    """The product's price in a currency, rounded to cents."""
    return round(product.price_eur * FX[currency], 2)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZONES: dict[int, timezone] = {}


def rfc3339(ms: int, offset_min: int = 0, millis: bool = True) -> str:
    """Formats epoch milliseconds as RFC 3339 text in a fixed UTC offset (`Z` for UTC).

    Args:
        ms: epoch milliseconds.
        offset_min: the local offset in minutes.
        millis: whether to keep the milliseconds (without them the text is exact only for whole seconds).
    """
    zone = _ZONES.get(offset_min)
    if zone is None:
        zone = _ZONES[offset_min] = timezone(timedelta(minutes=offset_min))
    text = (_EPOCH + timedelta(milliseconds=ms)).astimezone(zone).isoformat(
        timespec="milliseconds" if millis else "seconds")
    return text[:-6] + "Z" if offset_min == 0 else text


def seeded_uuid(rng: random.Random) -> str:
    """A UUID4 string drawn from a seeded random stream."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
