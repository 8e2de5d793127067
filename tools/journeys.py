"""Simulated shoppers and their journeys: the valid events of the synthetic clickstream.

A :class:`Population` of people browses the catalogue on the web (cookie `anonymous_id`) and in the app
(`device_id`), in sessions separated by pauses; logs in (a `login` links the anonymous/device id to the
`user_id`), registers, buys (guest checkouts carry the email), changes consent, rarely asks to be erased
(the person then leaves and a newcomer takes the slot), and is synced from a CRM (`source: "crm"`) whose
traits sometimes disagree with what the person typed in. Pure Python and deterministic: every draw comes
from the one `random.Random` of the :class:`World`, in event-time order.
"""

from __future__ import annotations

import heapq
import math
import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from tools.journeys_world import (
    CAMPAIGNS,
    CATEGORIES,
    FIRST_NAMES,
    LAST_NAMES,
    NICKNAMES,
    REFERRERS,
    REGIONS,
    SITE,
    TIERS,
    Catalogue,
    Product,
    Region,
    price_in,
    rfc3339,
    seeded_uuid,
)

# Behaviour per session (or per step, where noted); the knobs worth tuning are in JourneyConfig.
REGISTERED_SHARE = 0.5  # people who already have an account when they first show up
LOGIN_PROBABILITY = 0.4  # a registered person logs in during a session on a logged-out touchpoint
REGISTER_PROBABILITY = 0.08  # a person without an account signs up during a session
CHECKOUT_PROBABILITY = 0.35  # a session with a non-empty cart ends in a purchase
GUEST_LOGIN_AT_CHECKOUT = 0.8  # a registered, logged-out person logs in before paying
LOGOUT_PROBABILITY = 0.1  # a logged-in web session ends with a logout
NEW_ANONYMOUS_ID_AFTER_LOGOUT = 0.5  # the web SDK resets its cookie on logout
NEW_TOUCHPOINT_PROBABILITY = 0.06  # a session happens on a new browser or a newly installed app
COOKIE_RESET_PROBABILITY = 0.03  # the browser lost its cookie since the last session
MAX_TOUCHPOINTS = 4
CONSENT_OFF_PROBABILITY = 0.02  # a session starts by withdrawing personalization consent
CONSENT_ON_PROBABILITY = 0.35  # ... and, once withdrawn, by granting it again
CRM_SYNC_PROBABILITY = 0.15  # the CRM pushes a registered person's record during a pause
TRAIT_CONFLICT_PROBABILITY = 0.35  # the web/app traits disagree with the CRM on one trait
PHONE_IN_CRM = 0.3
MIN_THINK_S, MAX_THINK_S = 0.3, 900.0  # in-session pauses stay well under a 30-minute session gap
# Events per session besides the browsing steps: the landing page, and now and then a consent change, login,
# sign-up, purchase, logout or CRM sync (measured; it hardly moves with the JourneyConfig knobs).
SESSION_EXTRA_EVENTS = 1.55


@dataclass(frozen=True)
class JourneyConfig:
    """How people behave.

    Attributes:
        session_gap_mean_s: mean pause between two sessions of a person, on top of `session_gap_min_s`
            (exponential: with the defaults about a fifth of the pauses are under 30 minutes, the rest over).
        session_gap_min_s: shortest pause between two sessions.
        event_gap_mean_s: mean think time between two events of a session (log-normal, at most 15 min);
            a view's `dwell_ms` is the think time that follows it.
        events_per_session: mean number of browsing steps in a session.
        catalogue_size: number of products.
        erase_probability: chance that a session ends with an `erase` request.
        app_share: share of people whose first touchpoint is the app rather than the web.
    """

    session_gap_mean_s: float = 7200.0
    session_gap_min_s: float = 60.0
    event_gap_mean_s: float = 20.0
    events_per_session: float = 8.0
    catalogue_size: int = 400
    erase_probability: float = 0.002
    app_share: float = 0.4

    def __post_init__(self) -> None:
        if self.session_gap_min_s < 2 or self.session_gap_mean_s < 0 or self.event_gap_mean_s <= 0:
            raise ValueError("session_gap_min_s must be >= 2 s and the mean gaps positive")
        if self.events_per_session < 1:
            raise ValueError("events_per_session must be >= 1")
        for name in ("erase_probability", "app_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")

    def think_mu(self) -> float:
        """The mu of the log-normal think time (sigma 1) whose mean is `event_gap_mean_s` before clipping."""
        return math.log(self.event_gap_mean_s) - 0.5

    def mean_think_s(self) -> float:
        """Mean think time between two events of a session (the log-normal, clipped as `Journey` does)."""
        cdf, mu = NormalDist().cdf, self.think_mu()
        lo, hi = math.log(MIN_THINK_S) - mu, math.log(MAX_THINK_S) - mu
        return (MIN_THINK_S * cdf(lo) + MAX_THINK_S * (1 - cdf(hi))
                + self.event_gap_mean_s * (cdf(hi - 1) - cdf(lo - 1)))

    def session_events(self) -> float:
        """Expected events per session: max(1, round(exponential steps)) plus the extras."""
        m = self.events_per_session
        return math.exp(-0.5 / m) / -math.expm1(-1 / m) - math.expm1(-0.5 / m) + SESSION_EXTRA_EVENTS

    def session_s(self) -> float:
        """Mean session length in seconds (every event is followed by a think time)."""
        return self.session_events() * self.mean_think_s()

    def events_per_person_s(self) -> float:
        """A person's long-run mean number of valid events per second: a session per session-plus-pause."""
        return self.session_events() / (self.session_s() + self.session_gap_min_s + self.session_gap_mean_s)


@dataclass(slots=True)
class Touchpoint:
    """A browser (cookie `anonymous_id`) or an app install (`device_id`) of one person."""

    channel: str
    id_type: str
    id_value: str
    source: str
    logged_in: bool = False


@dataclass(slots=True)
class Person:
    """Ground truth about one simulated person.

    Attributes:
        person_id: the true identity (never sent in events; for identity-matching quality).
        key: the first identifier the person used: the Kafka key of all their records.
        traits: what the person typed in on the web or in the app.
        crm_traits: what the CRM holds; sometimes disagrees with `traits`.
    """

    person_id: str
    key: str
    region: Region
    interests: tuple[str, ...]
    traits: dict[str, Any]
    crm_traits: dict[str, Any]
    touchpoints: list[Touchpoint]
    user_id: str
    email: str
    phone: str
    registered: bool
    consent: bool = True
    cart: dict[str, tuple[Product, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Draft:
    """A valid event before serialization, with its event time and its person's ground truth."""

    ts_ms: int
    event: dict[str, Any]
    person: str
    key: str


@dataclass
class World:
    """What all journeys share: the random stream, the catalogue and the behaviour settings."""

    rng: random.Random
    catalogue: Catalogue
    config: JourneyConfig

    def uuid(self) -> str:
        """A random (seeded) UUID4 string."""
        return seeded_uuid(self.rng)

    def hex_id(self, prefix: str, digits: int = 12) -> str:
        """A random (seeded) hex identifier with a prefix."""
        return f"{prefix}{self.rng.getrandbits(4 * digits):0{digits}x}"

    def touchpoint(self, app: bool) -> Touchpoint:
        """A new, logged-out browser or app install."""
        if app:
            return Touchpoint("app", "device_id", self.hex_id("dev-", 16),
                              self.rng.choice(("ios-app", "android-app")))
        return Touchpoint("web", "anonymous_id", self.uuid(), "web-sdk")


def new_person(world: World, number: int) -> Person:
    """Creates the `number`-th person: names, region, interests, an account (maybe) and one touchpoint."""
    rng = world.rng
    region = rng.choice(REGIONS)
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    city = rng.choice(region.cities)
    dob = f"{rng.randint(1950, 2006)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    crm = {"first_name": first, "last_name": last, "dob": dob, "city": city, "tier": rng.choice(TIERS),
           "customer_since": rng.randint(2010, 2026), "marketing_opt_in": rng.random() < 0.6}
    traits: dict[str, Any] = {"first_name": first, "last_name": last, "city": city}
    if rng.random() < 0.3:
        traits["dob"] = dob
    if rng.random() < TRAIT_CONFLICT_PROBABILITY:
        _conflict(rng, traits, region)
    local = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore").decode()
    email = f"{local.lower().replace(' ', '').replace(chr(39), '')}.{number}@example.com"
    touchpoint = world.touchpoint(app=rng.random() < world.config.app_share)
    return Person(person_id=f"P{number:07d}", key=touchpoint.id_value, region=region,
                  interests=tuple(rng.sample(CATEGORIES, rng.randint(1, 3))), traits=traits, crm_traits=crm,
                  touchpoints=[touchpoint], user_id=world.hex_id("u-", 10), email=email,
                  phone=f"+1-555-01{rng.randint(0, 99):02d}", registered=rng.random() < REGISTERED_SHARE)


def _conflict(rng: random.Random, traits: dict[str, Any], region: Region) -> None:
    """Makes the web/app traits disagree with the CRM's on one trait."""
    what = rng.choice(("first_name", "city", "last_name", "dob"))
    if what == "first_name" and traits["first_name"] in NICKNAMES:
        traits["first_name"] = NICKNAMES[traits["first_name"]]
    elif what == "last_name":
        traits["last_name"] = f"{rng.choice(LAST_NAMES)}-{traits['last_name']}"
    elif what == "dob" and "dob" in traits:
        year, month, day = traits["dob"].split("-")
        swapped = int(day) <= 12 and day != month  # day and month swapped, or a year off
        traits["dob"] = f"{year}-{day}-{month}" if swapped else f"{int(year) + 1}-{month}-{day}"
    else:  # moved: the CRM still has the old city
        traits["city"] = rng.choice([c for c in region.cities if c != traits["city"]])


class Journey:
    """One person's life in the shop: iterating yields :class:`Draft` events in non-decreasing time."""

    def __init__(self, person: Person, start_ms: int, world: World):
        self.p = person
        self.t = start_ms
        self.w = world
        self.rng = world.rng
        self.erased = False
        self.last_product: Product | None = None
        self._think_mu = world.config.think_mu()

    def __iter__(self) -> Iterator[Draft]:
        cfg = self.w.config
        while True:
            yield from self._session(self._touchpoint())
            if self.erased:
                return
            gap = int((cfg.session_gap_min_s + self.rng.expovariate(1.0 / max(cfg.session_gap_mean_s, 1e-3)))
                      * 1000)
            end = self.t + gap
            if self.p.registered and self.rng.random() < CRM_SYNC_PROBABILITY:
                self.t = -(-(self.t + int(gap * self.rng.uniform(0.1, 0.9))) // 1000) * 1000  # whole second
                yield self._crm_identify()
            self.t = end

    # -- sessions -------------------------------------------------------------------------------------

    def _touchpoint(self) -> Touchpoint:
        rng, tps = self.rng, self.p.touchpoints
        if len(tps) < MAX_TOUCHPOINTS and rng.random() < NEW_TOUCHPOINT_PROBABILITY:
            tps.append(self.w.touchpoint(app=rng.random() < 0.5))
            return tps[-1]
        tp = rng.choice(tps)
        if tp.channel == "web" and rng.random() < COOKIE_RESET_PROBABILITY:
            tp.id_value, tp.logged_in = self.w.uuid(), False
        return tp

    def _session(self, tp: Touchpoint) -> Iterator[Draft]:
        p, rng = self.p, self.rng
        if p.consent and rng.random() < CONSENT_OFF_PROBABILITY:
            yield self._consent(tp, False)
        elif not p.consent and rng.random() < CONSENT_ON_PROBABILITY:
            yield self._consent(tp, True)
        yield self._landing(tp)
        steps = max(1, round(rng.expovariate(1.0 / self.w.config.events_per_session)))
        login_at = register_at = -1
        if p.registered and not tp.logged_in and rng.random() < LOGIN_PROBABILITY:
            login_at = rng.randrange(steps)
        elif not p.registered and rng.random() < REGISTER_PROBABILITY:
            register_at = rng.randrange(steps)
        for step in range(steps):
            if step == login_at:
                yield self._login(tp)
            elif step == register_at:
                yield from self._register(tp)
            yield self._browse(tp)
        if p.cart and rng.random() < CHECKOUT_PROBABILITY:
            yield from self._checkout(tp)
        if rng.random() < self.w.config.erase_probability:
            self.erased = True
            yield self._erase(tp)
        elif tp.logged_in and tp.channel == "web" and rng.random() < LOGOUT_PROBABILITY:
            yield self._logout(tp)

    def _browse(self, tp: Touchpoint) -> Draft:
        r = self.rng.random()
        if r < 0.16:
            return self._category_page(tp)
        if r < 0.28:
            return self._search(tp)
        if r < 0.42 and self.last_product is not None:
            return self._cart_change(tp, "add_to_cart", self.last_product)
        if r < 0.47 and self.p.cart:
            product, _ = self.p.cart[self.rng.choice(sorted(self.p.cart))]
            return self._cart_change(tp, "remove_from_cart", product)
        if r < 0.49 and tp.logged_in:
            return self._profile_update(tp)
        return self._product_view(tp)

    # -- events ---------------------------------------------------------------------------------------

    def _think_ms(self) -> int:
        return int(min(max(self.rng.lognormvariate(self._think_mu, 1.0), MIN_THINK_S), MAX_THINK_S) * 1000)

    def _ts(self, source: str) -> str | int:
        if source in ("ios-app", "android-app"):
            return self.t
        if source == "web-sdk":
            return rfc3339(self.t, self.p.region.offset_min)
        return rfc3339(self.t, 0, millis=(source != "crm"))

    def _ids(self, tp: Touchpoint) -> dict[str, str]:
        ids = {tp.id_type: tp.id_value}
        if tp.logged_in:
            ids["user_id"] = self.p.user_id
        return ids

    def _emit(self, etype: str, tp: Touchpoint, props: dict[str, Any] | None = None, *, dwell: bool = False,
              ids: dict[str, str] | None = None, source: str | None = None, **extra: Any) -> Draft:
        """Builds an event at the current time, then advances the clock by a think time."""
        gap = self._think_ms()
        source = source or tp.source
        event: dict[str, Any] = {"event_id": self.w.uuid(), "type": etype, "ts": self._ts(source),
                                 "ids": ids or self._ids(tp), "channel": tp.channel, "source": source}
        if props is not None:
            event["props"] = {**props, "dwell_ms": gap} if dwell else props
        event.update(extra)
        draft = Draft(self.t, event, self.p.person_id, self.p.key)
        self.t += gap
        return draft

    def _url(self, tp: Touchpoint, path: str) -> str:
        return f"app://{path}" if tp.channel == "app" else f"{SITE}/{path}"

    def _landing(self, tp: Touchpoint) -> Draft:
        rng = self.rng
        if tp.channel == "app":
            return self._emit("page_view", tp, {"url": "app://home", "title": "Home"}, dwell=True)
        url = self._url(tp, rng.choice(("", "", f"c/{rng.choice(CATEGORIES)}", "deals")))
        if rng.random() < 0.2:
            url += f"?utm_source=newsletter&utm_medium=email&utm_campaign={rng.choice(CAMPAIGNS)}"
        return self._emit("page_view", tp, {"url": url, "referrer": rng.choice(REFERRERS), "title": "Shop"},
                          dwell=True)

    def _category_page(self, tp: Touchpoint) -> Draft:
        rng = self.rng
        category = rng.choice(self.p.interests) if rng.random() < 0.7 else rng.choice(CATEGORIES)
        return self._emit("page_view", tp, {"url": self._url(tp, f"c/{category}"), "category": category,
                                            "title": category.title()}, dwell=True)

    def _product_props(self, product: Product) -> dict[str, Any]:
        return {"product_id": product.product_id, "category": product.category, "name": product.name,
                "price": price_in(product, self.p.region.currency), "currency": self.p.region.currency}

    def _product_view(self, tp: Touchpoint) -> Draft:
        product = self.w.catalogue.pick(self.rng, self.p.interests)
        self.last_product = product
        props = self._product_props(product)
        props["url"] = self._url(tp, f"p/{product.product_id}")
        return self._emit("product_view", tp, props, dwell=True)

    def _search(self, tp: Touchpoint) -> Draft:
        rng = self.rng
        query = self.w.catalogue.pick(rng, self.p.interests).name.split(" ", 1)[1]
        if len(query) > 3 and rng.random() < 0.15:  # a typo: two letters swapped
            i = rng.randrange(len(query) - 1)
            query = query[:i] + query[i + 1] + query[i] + query[i + 2:]
        return self._emit("search", tp, {"query": query, "results": rng.randint(0, 120)})

    def _cart_change(self, tp: Touchpoint, etype: str, product: Product) -> Draft:
        cart = self.p.cart
        if etype == "add_to_cart":
            quantity = 1 if self.rng.random() < 0.8 else self.rng.randint(2, 4)
            cart[product.product_id] = (product, cart.get(product.product_id, (product, 0))[1] + quantity)
        else:
            quantity = cart.pop(product.product_id)[1]
        return self._emit(etype, tp, {**self._product_props(product), "quantity": quantity})

    def _checkout(self, tp: Touchpoint) -> Iterator[Draft]:
        p = self.p
        if p.registered and not tp.logged_in and self.rng.random() < GUEST_LOGIN_AT_CHECKOUT:
            yield self._login(tp)
        ids = self._ids(tp)
        if not tp.logged_in:  # guest checkout: the order confirmation goes to the email
            ids["email"] = p.email
        currency = p.region.currency
        items: list[dict[str, Any]] = [
            {"product_id": product.product_id, "price": price_in(product, currency), "quantity": qty}
            for product, qty in (p.cart[k] for k in sorted(p.cart))]
        revenue = round(sum(i["price"] * i["quantity"] for i in items), 2)
        props = {"order_id": self.w.hex_id("ord-"), "revenue": revenue, "currency": currency,
                 "quantity": sum(i["quantity"] for i in items), "items": items}
        p.cart.clear()
        yield self._emit("purchase", tp, props, ids=ids)

    def _login(self, tp: Touchpoint) -> Draft:
        ids = {tp.id_type: tp.id_value, "user_id": self.p.user_id}
        if self.rng.random() < 0.4:
            ids["email"] = self.p.email
        tp.logged_in = True
        method = self.rng.choice(("password", "google", "apple", "magic_link"))
        return self._emit("login", tp, {"method": method}, ids=ids)

    def _register(self, tp: Touchpoint) -> Iterator[Draft]:
        p = self.p
        p.registered = True
        ids = {tp.id_type: tp.id_value, "user_id": p.user_id, "email": p.email}
        yield self._emit("identify", tp, ids=ids, traits=dict(p.traits))
        yield self._login(tp)

    def _profile_update(self, tp: Touchpoint) -> Draft:
        keys = sorted(self.p.traits)
        picked = self.rng.sample(keys, self.rng.randint(1, len(keys)))
        return self._emit("identify", tp, traits={k: self.p.traits[k] for k in picked})

    def _logout(self, tp: Touchpoint) -> Draft:
        draft = self._emit("logout", tp)
        tp.logged_in = False
        if self.rng.random() < NEW_ANONYMOUS_ID_AFTER_LOGOUT:
            tp.id_value = self.w.uuid()
        return draft

    def _consent(self, tp: Touchpoint, granted: bool) -> Draft:
        self.p.consent = granted
        consent = {"personalization": granted}
        if not granted and self.rng.random() < 0.5:
            consent["marketing"] = False
        return self._emit("consent", tp, consent=consent)

    def _erase(self, tp: Touchpoint) -> Draft:
        p = self.p
        ids = {"user_id": p.user_id, "email": p.email} if p.registered else self._ids(tp)
        return self._emit("erase", tp, ids=ids, source="privacy-portal")

    def _crm_identify(self) -> Draft:
        p = self.p
        ids = {"user_id": p.user_id, "email": p.email}
        if self.rng.random() < PHONE_IN_CRM:
            ids["phone"] = p.phone
        event = {"event_id": self.w.uuid(), "type": "identify", "ts": self._ts("crm"), "ids": ids,
                 "source": "crm", "traits": dict(p.crm_traits)}
        return Draft(self.t, event, p.person_id, p.key)


def first_session_s(rng: random.Random, config: JourneyConfig) -> float:
    """When a person's first session starts (seconds after the origin), as if the shop had always been open.

    Picks a point of the person's cycle: a session up to its last event, then a pause (the last think time,
    `session_gap_min_s` and an exponential). Someone caught mid-session makes their next event after the rest
    of a think time (drawn from the length-biased log-normal); as step counts are memoryless, a fresh session
    stands in for the rest of theirs. Someone pausing comes back after the rest of the pause: uniform over
    its fixed part, exponential beyond. So the event rate is steady from the origin on.
    """
    think_s = config.mean_think_s()
    active_s = config.session_s() - think_s
    fixed_s, mean_s = think_s + config.session_gap_min_s, config.session_gap_mean_s
    x = rng.random() * (active_s + fixed_s + mean_s)
    if x < active_s:
        return x / active_s * min(rng.lognormvariate(config.think_mu() + 1, 1.0), MAX_THINK_S)
    x -= active_s
    return x if x <= fixed_s else fixed_s - mean_s * math.log1p(-(x - fixed_s) / mean_s)


class Population:
    """A fixed number of person slots merged into one stream of drafts in event-time order.

    Slots start as if the shop had always been open (see :func:`first_session_s`), so the event rate is about
    `users * events_per_person_s()` from the origin on. A person who asked to be erased leaves, and a newcomer
    takes the slot after a pause.
    """

    def __init__(self, rng: random.Random, users: int, origin_ms: int, config: JourneyConfig):
        if users < 1:
            raise ValueError("users must be >= 1")
        self._world = World(rng, Catalogue(rng, config.catalogue_size), config)
        self._born = 0
        self._journeys: list[Iterator[Draft]] = [iter(()) for _ in range(users)]
        # (time, slot, draft or None for a slot whose person has not started yet)
        self._heap: list[tuple[int, int, Draft | None]] = [
            (origin_ms + int(1000 * first_session_s(rng, config)), slot, None) for slot in range(users)]
        heapq.heapify(self._heap)

    def __iter__(self) -> Iterator[Draft]:
        heap = self._heap
        while heap:
            ts, slot, draft = heapq.heappop(heap)
            if draft is None:  # the slot's person arrives
                self._born += 1
                journey = iter(Journey(new_person(self._world, self._born), ts, self._world))
                self._journeys[slot] = journey
                draft = next(journey)
            else:
                yield draft
                after = next(self._journeys[slot], None)
                if after is None:  # erased: a newcomer takes the slot after a pause
                    pause = int(self._world.config.session_gap_min_s * 1000)
                    heapq.heappush(heap, (draft.ts_ms + pause, slot, None))
                    continue
                draft = after
            heapq.heappush(heap, (draft.ts_ms, slot, draft))
