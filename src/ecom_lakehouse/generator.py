"""Writes the 7 thelook_ecommerce tables as CSV in the real BigQuery export format.

The distributions follow the published generator (Google's public-datasets-pipelines
``thelook_ecommerce/.../fake.py``, summarised in shared/thelook/FACTS.md): 0-4 orders per
user, the status mix and the timestamps each status implies, 1-4 items per order, products
uniform within the user's gender, sold + unsold inventory, one session per order item and
5 anonymous ("ghost") sessions per user. The catalogue parameters below are the published
profile of the real 29,120-product catalogue (department x category counts, retail price
p10/p50/p90/max, cost/retail band, brand count).

It is vectorised with numpy and chunked by users, so memory stays bounded at any scale, and
deterministic: every chunk draws from ``default_rng([seed, chunk])`` and the catalogue from a
fixed seed, so the same seed gives the same bytes.

``taste=True`` plants collaborative signal that the faithful data does not have (category
and brand affinity per user, a popularity skew over products) so that a recommender can be
validated on data where there is something to find. ``taste_strength`` grades it: each order
item follows the user's taste with that probability and is otherwise drawn as the faithful
data draws it, so 0 has no signal beyond gender and 1 (the default) is the full taste. The
truth is kept beside the tables (``<out>/_truth/``: each user's taste group and the strength),
from which ``taste_probabilities`` gives every product's true chance per group: the oracle
that no recommender can beat on average.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ecom_lakehouse.schemas import raw_names

# (department, category, products, p10, p50, p90, max price, cost ratio min, max, brands)
CATALOGUE_PROFILE = [
    ("Men", "Accessories", 820, 7.95, 24.99, 108.0, 296.45, 0.351, 0.45, 245),
    ("Men", "Active", 753, 14.65, 35.0, 84.06, 903.0, 0.371, 0.47, 164),
    ("Men", "Fashion Hoodies & Sweatshirts", 971, 27.65, 51.95, 89.5, 903.0, 0.501, 0.6, 245),
    ("Men", "Jeans", 1117, 35.74, 77.95, 195.0, 389.0, 0.481, 0.58, 153),
    ("Men", "Outerwear & Coats", 828, 45.0, 109.99, 285.0, 999.0, 0.391, 0.49, 191),
    ("Men", "Pants", 1041, 22.0, 49.99, 108.95, 293.33, 0.411, 0.51, 199),
    ("Men", "Shorts", 939, 24.97, 44.45, 69.5, 999.0, 0.451, 0.55, 209),
    ("Men", "Sleep & Lounge", 941, 18.5, 36.88, 89.95, 399.95, 0.351, 0.45, 158),
    ("Men", "Socks", 905, 9.49, 15.08, 30.0, 903.0, 0.551, 0.65, 191),
    ("Men", "Suits & Sport Coats", 739, 27.77, 99.5, 259.99, 698.0, 0.351, 0.45, 145),
    ("Men", "Sweaters", 999, 27.99, 59.99, 149.0, 349.98, 0.451, 0.55, 211),
    ("Men", "Swim", 906, 25.0, 49.5, 69.99, 274.99, 0.551, 0.65, 135),
    ("Men", "Tops & Tees", 1084, 19.99, 33.95, 69.98, 268.0, 0.511, 0.61, 244),
    ("Men", "Underwear", 1088, 14.99, 25.0, 38.0, 283.34, 0.421, 0.52, 145),
    ("Women", "Accessories", 739, 6.99, 22.99, 109.0, 299.0, 0.351, 0.45, 266),
    ("Women", "Active", 679, 14.12, 32.98, 98.5, 903.0, 0.371, 0.47, 173),
    ("Women", "Blazers & Jackets", 561, 11.71, 59.99, 206.96, 698.0, 0.331, 0.43, 143),
    ("Women", "Clothing Sets", 37, 34.5, 70.0, 147.13, 199.95, 0.571, 0.67, 23),
    ("Women", "Dresses", 955, 12.74, 59.0, 159.99, 498.0, 0.401, 0.5, 180),
    ("Women", "Fashion Hoodies & Sweatshirts", 895, 19.31, 44.5, 79.95, 288.0, 0.421, 0.52, 228),
    ("Women", "Intimates", 2363, 10.5, 28.0, 62.0, 903.0, 0.481, 0.58, 357),
    ("Women", "Jeans", 882, 32.9, 79.0, 179.0, 326.0, 0.491, 0.59, 110),
    ("Women", "Jumpsuits & Rompers", 162, 10.98, 24.99, 98.0, 550.0, 0.481, 0.579, 56),
    ("Women", "Leggings", 564, 7.95, 16.95, 56.42, 528.81, 0.551, 0.65, 161),
    ("Women", "Maternity", 898, 18.98, 39.98, 93.75, 275.0, 0.391, 0.49, 158),
    ("Women", "Outerwear & Coats", 592, 39.99, 105.56, 270.0, 903.0, 0.401, 0.5, 162),
    ("Women", "Pants & Capris", 613, 18.9, 40.0, 99.99, 895.0, 0.481, 0.58, 196),
    ("Women", "Plus", 758, 8.5, 25.0, 86.51, 903.0, 0.451, 0.55, 273),
    ("Women", "Shorts", 826, 12.64, 32.0, 74.0, 246.0, 0.451, 0.55, 233),
    ("Women", "Skirts", 367, 14.75, 36.99, 98.0, 598.0, 0.351, 0.45, 151),
    ("Women", "Sleep & Lounge", 830, 16.99, 37.95, 89.99, 360.0, 0.551, 0.65, 172),
    ("Women", "Socks & Hosiery", 666, 7.99, 14.0, 27.0, 159.95, 0.351, 0.45, 172),
    ("Women", "Suits", 188, 55.98, 122.82, 169.99, 239.72, 0.551, 0.65, 18),
    ("Women", "Sweaters", 738, 19.99, 54.0, 148.0, 588.0, 0.401, 0.5, 191),
    ("Women", "Swim", 892, 24.99, 53.55, 131.95, 288.0, 0.371, 0.47, 170),
    ("Women", "Tops & Tees", 784, 11.01, 29.95, 78.0, 285.0, 0.511, 0.61, 220),
]
TOTAL_BRANDS = 2756
CATALOGUE_SEED = 20240101  # the real catalogue is a static file: same for every --seed

DISTRIBUTION_CENTERS = [
    (1, "Memphis TN", 35.1174, -89.9711), (2, "Chicago IL", 41.8369, -87.6847),
    (3, "Houston TX", 29.7604, -95.3698), (4, "Los Angeles CA", 34.05, -118.25),
    (5, "New Orleans LA", 29.95, -90.0667), (6, "Port Authority of New York/New Jersey NY/NJ", 40.634, -73.7834),
    (7, "Philadelphia PA", 39.95, -75.1667), (8, "Mobile AL", 30.6944, -88.0431),
    (9, "Charleston SC", 32.7833, -79.9333), (10, "Savannah GA", 32.0167, -81.1167),
]

# A small world table: (country, state, city, postal_code, latitude, longitude, weight).
# Shares follow the public profile (China, US and Brasil dominate); 'null' is the literal
# city string of the real data, 'España' the second spelling of Spain.
LOCATIONS = [
    ("China", "Guangdong", "Shenzhen", "518000", 22.5431, 114.0579, 0.12),
    ("China", "Shanghai", "Shanghai", "200000", 31.2304, 121.4737, 0.11),
    ("China", "Beijing", "Beijing", "100000", 39.9042, 116.4074, 0.11),
    ("United States", "California", "Los Angeles", "90001", 34.0522, -118.2437, 0.08),
    ("United States", "Texas", "Houston", "77002", 29.7604, -95.3698, 0.07),
    ("United States", "New York", "New York", "10001", 40.7128, -74.006, 0.07),
    ("Brasil", "São Paulo", "São Paulo", "02220-000", -23.5505, -46.6333, 0.06),
    ("Brasil", "Amapá", "Macapá", "68907", 0.0829, -51.0694, 0.05),
    ("Brasil", "Acre", "null", "69980-000", -8.0653, -72.8709, 0.01),
    ("Brasil", "Amazonas", "Manaus", "69090", -3.0293, -60.0217, 0.03),
    ("South Korea", "Seoul", "Seoul", "04524", 37.5665, 126.978, 0.05),
    ("France", "Île-de-France", "Paris", "75001", 48.8566, 2.3522, 0.05),
    ("United Kingdom", "England", "London", "EC1A 1BB", 51.5074, -0.1278, 0.05),
    ("Germany", "Berlin", "Berlin", "10115", 52.52, 13.405, 0.04),
    ("Spain", "Madrid", "Madrid", "28001", 40.4168, -3.7038, 0.025),
    ("España", "Cataluña", "Barcelona", "8001", 41.3874, 2.1686, 0.015),
    ("Japan", "Mie", "Suzuka City", "513-0836", 34.8518, 136.5087, 0.025),
    ("Australia", "New South Wales", "Sydney", "2000", -33.8688, 151.2093, 0.02),
    ("Belgium", "Brussels", "Brussels", "1000", 50.8503, 4.3517, 0.01),
    ("Poland", "Dolnośląskie", "Bogatynia", "59", 50.9069, 14.9563, 0.01),
    ("Colombia", "Bogotá", "Bogotá", "110111", 4.711, -74.0721, 0.01),
    ("Austria", "Wien", "Wien", "1010", 48.2082, 16.3738, 0.005),
]

FIRST_NAMES = {
    "M": ["James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas",
          "Charles", "Daniel", "Matthew", "Anthony", "Mark", "Steven", "Paul", "Andrew", "Joshua",
          "Kevin", "Brian", "Ryan", "Jason", "Eric", "Jacob", "Nicholas", "Tyler", "Aaron"],
    "F": ["Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica",
          "Sarah", "Karen", "Lisa", "Nancy", "Angela", "Ashley", "Emily", "Michelle", "Amanda",
          "Melissa", "Deborah", "Rachael", "Laura", "Amy", "Anna", "Julie", "Megan", "Heather"],
}
LAST_NAMES = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
              "Martinez", "Wilson", "Anderson", "Taylor", "Thomas", "Moore", "Jackson", "Martin",
              "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Walker", "Hall", "Young",
              "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Cole", "Butler",
              "Peterson", "Drake", "Jenkins", "Ward", "Weeks", "Anderson"]
STREET_SUFFIXES = ["Heights", "Dam", "Path", "Lake", "Island", "Motorway", "Manors", "Street",
                   "Avenue", "Road", "Lane", "Court", "Ridge", "Crossing", "Plaza"]
ADJECTIVES = ["Classic", "Slim Fit", "Relaxed", "Vintage", "Essential", "Premium", "Soft",
              "Stretch", "Lightweight", "Cotton", "Performance", "Everyday", "Signature"]
COLOURS = ["Black", "Navy", "White", "Grey", "Red", "Blue", "Putty", "Olive", "Pink", "Khaki"]

USER_TRAFFIC = (["Search", "Organic", "Facebook", "Email", "Display"], [0.70, 0.15, 0.06, 0.05, 0.04])
EVENT_TRAFFIC = (["Email", "Adwords", "Organic", "YouTube", "Facebook"], [0.45, 0.30, 0.05, 0.10, 0.10])
BROWSERS = (["IE", "Chrome", "Safari", "Firefox", "Other"], [0.05, 0.50, 0.20, 0.20, 0.05])
ORDER_STATUS = (["Complete", "Cancelled", "Returned", "Processing", "Shipped"], [0.25, 0.15, 0.10, 0.20, 0.30])
ORDERS_PER_USER = ([0, 1, 2, 3, 4], [0.2, 0.5, 0.2, 0.05, 0.05])
ITEMS_PER_ORDER = ([1, 2, 3, 4], [0.7, 0.2, 0.05, 0.05])
UNSOLD_PER_SOLD = ([1, 2, 3], [0.5, 0.3, 0.2])
GHOST_SESSIONS_PER_USER = 5
GHOST_SEQUENCES = [["product", "cart", "cancel"], ["department", "product", "cart"], ["product"],
                   ["department", "product"]]

START = np.datetime64("2019-01-01T00:00:00", "s").astype(np.int64)
DEFAULT_AS_OF = "2025-07-01T00:00:00"
USERS_AT_SCALE_1 = 100_000
CHUNK_USERS = 20_000
MINUTE, HOUR, DAY = 60, 3600, 86400

# Real rates of ordering anomalies (per order) in the full Kaggle copy, planted so that
# silver's rules have something real to find: 19 shipped before created, 6 delivered
# before shipped, 5 returned before delivered, out of 125,226 orders.
ANOMALY_RATES = {"shipped_before_created": 19 / 125_226, "delivered_before_shipped": 6 / 125_226,
                 "returned_before_delivered": 5 / 125_226}


@dataclass(frozen=True)
class GeneratorOptions:
    scale: float = 0.1
    seed: int = 42
    taste: bool = False
    taste_strength: float = 1.0  # with taste: the share of items drawn by taste, the rest as faithful data draws them
    as_of: str = DEFAULT_AS_OF

    def __post_init__(self):
        if not 0 <= self.taste_strength <= 1:
            raise ValueError(f"taste strength {self.taste_strength} is not between 0 and 1")


# --- formatting helpers: the BigQuery CSV export forms ----------------------------------

def format_timestamps(seconds: np.ndarray, rng: np.random.Generator, valid: np.ndarray | None = None,
                      as_of: int | None = None) -> np.ndarray:
    """'YYYY-MM-DD HH:MM:SS UTC' or 'YYYY-MM-DD HH:MM:SS.ffffff UTC', mixed per row as in
    real exports; the fraction is .000000 except for recent rows. NULL -> ''.

    Built as a byte matrix (n x 30) so that millions of rows format at C speed."""
    seconds = np.asarray(seconds, dtype=np.int64)
    n = len(seconds)
    base = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s").astype("S19")
    b = base.view(np.uint8).reshape(n, 19).copy()
    b[:, 10] = ord(" ")
    fractional = rng.random(n) < 0.6
    micros = rng.integers(0, 1_000_000, n)
    if as_of is not None:
        micros = np.where(seconds > as_of - 120 * DAY, micros, 0)
    else:
        micros = np.zeros(n, np.int64)
    digits = ((micros[:, None] // 10 ** np.arange(5, -1, -1)) % 10 + ord("0")).astype(np.uint8)
    utc = np.frombuffer(b" UTC", np.uint8)
    full = np.hstack([b, np.full((n, 1), ord("."), np.uint8), digits, np.broadcast_to(utc, (n, 4))])
    whole = np.hstack([b, np.broadcast_to(utc, (n, 4)), np.zeros((n, 7), np.uint8)])  # NUL padding is dropped
    out = np.where(fractional[:, None], full, whole).copy().view("S30").ravel().astype("U30").astype(object)
    if valid is not None:
        out[~valid] = ""
    return out


def format_float32(values: np.ndarray) -> np.ndarray:
    """Prices and costs carry float32 noise in the real data (6.9899997711181641)."""
    as32 = np.asarray(values, dtype=np.float32).astype(np.float64)
    return np.char.mod("%.17g", as32).astype(object)


def format_ids(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    out = np.asarray(values, dtype=np.int64).astype(str).astype(object)
    if valid is not None:
        out[~valid] = ""
    return out


def _choice(rng, options, n):
    values, weights = options
    return np.asarray(values, dtype=object)[rng.choice(len(values), size=n, p=weights)]


def _repeat_index(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def _position_in_group(counts: np.ndarray) -> np.ndarray:
    """0, 1, ... within each run of np.repeat(_, counts)."""
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(counts.sum()) - starts


# --- the catalogue (static, like the real products.csv) ----------------------------------

@dataclass
class Catalogue:
    frame: pd.DataFrame  # typed columns
    dept_uri: np.ndarray
    by_gender: dict[str, np.ndarray]  # gender -> product row indexes


def build_catalogue() -> Catalogue:
    rng = np.random.default_rng(CATALOGUE_SEED)
    syllables = ["ar", "be", "co", "da", "el", "fi", "go", "ha", "io", "ju", "ka", "lo", "mi",
                 "no", "pa", "qu", "ri", "so", "ta", "ul", "vi", "wa", "xe", "yo", "ze"]
    brand_pool = []
    for i in range(TOTAL_BRANDS):
        parts = rng.choice(syllables, size=2 + i % 2)
        name = "".join(parts).capitalize()
        brand_pool.append(f"{name}{'Â®' if i % 97 == 0 else ''}{' ' + str(i) if i >= 600 else ''}")
    rows = []
    for dept, cat, n, p10, p50, p90, pmax, rmin, rmax, n_brands in CATALOGUE_PROFILE:
        sigma = (np.log(p90) - np.log(p10)) / (2 * 1.2816)
        price = np.exp(rng.normal(np.log(p50), sigma, n))
        price = np.clip(np.round(price, 2), 0.02, pmax)
        price[np.argmax(price)] = pmax
        ratio = rng.uniform(rmin, rmax, n)
        brands = rng.choice(brand_pool, size=n_brands, replace=False)
        brand = brands[rng.integers(0, n_brands, n)]
        adjective = rng.choice(ADJECTIVES, n)
        colour = rng.choice(COLOURS, n)
        code = rng.integers(10_000, 99_999, n)
        rows.append(pd.DataFrame({
            "department": dept, "category": cat, "retail_price": price, "cost": price * ratio,
            "brand": brand,
            "name": [f"{b} {a} {cat.split(' ')[0]} - {c} W{k}S"
                     for b, a, c, k in zip(brand, adjective, colour, code, strict=True)],
        }))
    frame = pd.concat(rows, ignore_index=True)
    frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    n = len(frame)
    frame.insert(0, "id", np.arange(1, n + 1))
    frame["sku"] = [hashlib.md5(f"sku-{i}".encode()).hexdigest().upper() for i in frame["id"]]
    frame["distribution_center_id"] = rng.integers(1, 11, n)
    # Real quirks: a few sub-$1 products (10 order items under 1 in the full data),
    # 24 empty brands, 2 empty names.
    cheap = rng.choice(np.flatnonzero(frame["category"].eq("Accessories")), 6, replace=False)
    frame.loc[cheap, "retail_price"] = np.round(rng.uniform(0.02, 0.99, 6), 2)
    frame.loc[cheap, "cost"] = frame.loc[cheap, "retail_price"] * 0.4
    frame.loc[rng.choice(n, 24, replace=False), "brand"] = ""
    frame.loc[rng.choice(n, 2, replace=False), "name"] = ""
    dept_uri = ("/department/" + frame["department"].str.lower() + "/category/"
                + frame["category"].str.lower().str.replace(" ", "", regex=False) + "/brand/"
                + frame["brand"].str.lower().str.replace(" ", "", regex=False)).to_numpy(object)
    by_gender = {"M": np.flatnonzero(frame["department"].eq("Men")),
                 "F": np.flatnonzero(frame["department"].eq("Women"))}
    return Catalogue(frame, dept_uri, by_gender)


def products_csv_frame(cat: Catalogue) -> pd.DataFrame:
    f = cat.frame
    return pd.DataFrame({
        "id": format_ids(f["id"]), "cost": format_float32(f["cost"]), "category": f["category"],
        "name": f["name"], "brand": f["brand"], "retail_price": format_float32(f["retail_price"]),
        "department": f["department"], "sku": f["sku"],
        "distribution_center_id": format_ids(f["distribution_center_id"]),
    })[raw_names("products")]


def distribution_centers_csv_frame() -> pd.DataFrame:
    rows = [(str(i), name, repr(lat), repr(lon), f"POINT({lon!r} {lat!r})") for i, name, lat, lon in DISTRIBUTION_CENTERS]
    return pd.DataFrame(rows, columns=raw_names("distribution_centers"))


# --- taste: planted affinity for recommender validation -------------------------------

class SegmentSampler:
    """Draws one item per request from a chosen segment, by weight, vectorised:
    items are sorted by segment and `key = segment + cumulative share within segment`."""

    def __init__(self, segments: np.ndarray, weights: np.ndarray):
        order = np.lexsort((np.arange(len(segments)), segments))
        self.items = order
        seg_sorted, w = segments[order], weights[order]
        totals = np.bincount(seg_sorted, weights=w)
        cum = np.cumsum(w) - np.repeat(np.cumsum(totals) - totals, np.bincount(seg_sorted))
        self.keys = seg_sorted + cum / totals[seg_sorted]

    def sample(self, segment: np.ndarray, u: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.keys, segment + np.clip(u, 1e-12, 1 - 1e-12))
        return self.items[np.minimum(pos, len(self.items) - 1)]


TASTE_GROUPS_PER_GENDER = 40


@dataclass
class TasteModel:
    """Users belong to one of TASTE_GROUPS_PER_GENDER taste groups; a group has two favourite
    categories and a favourite brand. Many users share a group, which is the latent structure
    a collaborative recommender can find."""
    category_sampler: SegmentSampler  # segment = category code
    brand_sampler: SegmentSampler  # segment = brand code
    gender_sampler: SegmentSampler  # segment = 0 (M) / 1 (F)
    groups: dict[str, dict[str, np.ndarray]]  # gender -> cat1 / cat2 / brand per group
    category_code: np.ndarray  # per product row, what the samplers draw by
    brand_code: np.ndarray
    popularity: np.ndarray
    womens: np.ndarray  # 1 for the Women department's products


# Where a taste item comes from (pick_products): a favourite category (the first one FIRST_CATEGORY_SHARE of the
# time), the group's favourite brand, or the gender's popular products.
TASTE_MIX = {"category": 0.3, "brand": 0.6, "popular": 0.1}
FIRST_CATEGORY_SHARE = 0.7
TRUTH_FOLDER = "_truth"  # beside the tables; bronze reads only <table>.csv and <table>/*.csv


def build_taste(cat: Catalogue) -> TasteModel:
    rng = np.random.default_rng(CATALOGUE_SEED + 1)
    f = cat.frame
    category_code = pd.factorize(f["department"] + "/" + f["category"])[0]
    brand_code = pd.factorize(f["department"] + "/" + f["brand"])[0]
    # Popularity skew: Zipf-like weights over a random ranking of products.
    popularity = 1.0 / (1.0 + rng.permutation(len(f))) ** 0.5
    gender = f["department"].eq("Women").to_numpy().astype(np.int64)
    groups = {}
    for g, idx in cat.by_gender.items():
        cats = np.unique(category_code[idx])
        anchor = idx[rng.integers(0, len(idx), TASTE_GROUPS_PER_GENDER)]  # a product whose brand the group loves
        groups[g] = {"cat1": cats[rng.integers(0, len(cats), TASTE_GROUPS_PER_GENDER)],
                     "cat2": cats[rng.integers(0, len(cats), TASTE_GROUPS_PER_GENDER)],
                     "brand": brand_code[anchor]}
    # Within a favourite brand every product is as likely: the brand, not the item's global
    # popularity, is what a group shares.
    return TasteModel(SegmentSampler(category_code, popularity), SegmentSampler(brand_code, np.ones(len(f))),
                      SegmentSampler(gender, popularity), groups, category_code, brand_code, popularity, gender)


def pick_products(rng, cat: Catalogue, taste: TasteModel | None, user_gender: np.ndarray,
                  user_index: np.ndarray, favourites: dict | None, strength: float = 1.0) -> np.ndarray:
    """Product row index per order item (user_index points into the chunk's users). With taste, an item follows
    the user's taste with probability `strength` and is otherwise uniform within the user's gender."""
    n = len(user_index)
    genders = user_gender[user_index]
    out = np.empty(n, dtype=np.int64)
    if taste is None:  # the published generator: uniform within the user's gender
        for g, idx in cat.by_gender.items():
            mask = genders == g
            out[mask] = idx[rng.integers(0, len(idx), mask.sum())]
        return out
    u = rng.random(n)
    mode = rng.random(n)
    fav_cat = np.where(rng.random(n) < FIRST_CATEGORY_SHARE, favourites["cat1"][user_index], favourites["cat2"][user_index])
    by_cat = taste.category_sampler.sample(fav_cat, u)
    by_brand = taste.brand_sampler.sample(favourites["brand"][user_index], u)
    by_pop = taste.gender_sampler.sample((genders == "F").astype(np.int64), u)
    uniform = np.empty(n, dtype=np.int64)
    for g, idx in cat.by_gender.items():
        mask = genders == g
        uniform[mask] = idx[np.minimum((u[mask] * len(idx)).astype(np.int64), len(idx) - 1)]
    # `mode` below `strength` picks the taste, and mode / strength is then uniform again: which part of the
    # taste draws the item. At strength 1 this is the draw --taste always made, byte for byte.
    part = mode / max(strength, 1e-12)
    cut_category, cut_brand = TASTE_MIX["category"], TASTE_MIX["category"] + TASTE_MIX["brand"]
    tasteful = np.where(part < cut_category, by_cat, np.where(part < cut_brand, by_brand, by_pop))
    return np.where(mode < strength, tasteful, uniform)


def user_favourites(rng, taste: TasteModel, genders: np.ndarray) -> dict:
    """Each user's taste group (`group`, numbered within the gender) and its favourites."""
    n = len(genders)
    out = {key: np.empty(n, np.int64) for key in ("cat1", "cat2", "brand", "group")}
    for g, group in taste.groups.items():
        mask = genders == g
        member_of = rng.integers(0, TASTE_GROUPS_PER_GENDER, mask.sum())
        out["group"][mask] = member_of
        for key in ("cat1", "cat2", "brand"):
            out[key][mask] = group[key][member_of]
    return out


def taste_probabilities(taste: TasteModel, gender: str, group: int, strength: float) -> np.ndarray:
    """Each product row's chance of being a taste user's next item (a group's members share it): the mixture
    pick_products draws from, written out."""
    favourites = {key: taste.groups[gender][key][group] for key in ("cat1", "cat2", "brand")}
    womens = int(gender == "F")

    def within(mask: np.ndarray, weights: np.ndarray) -> np.ndarray:
        w = np.where(mask, weights, 0.0)
        return w / w.sum()

    in_gender = taste.womens == womens
    by_category = (FIRST_CATEGORY_SHARE * within(taste.category_code == favourites["cat1"], taste.popularity)
                   + (1 - FIRST_CATEGORY_SHARE) * within(taste.category_code == favourites["cat2"], taste.popularity))
    tasteful = (TASTE_MIX["category"] * by_category
                + TASTE_MIX["brand"] * within(taste.brand_code == favourites["brand"], np.ones(len(in_gender)))
                + TASTE_MIX["popular"] * within(in_gender, taste.popularity))
    return strength * tasteful + (1 - strength) * within(in_gender, np.ones(len(in_gender)))


def write_truth(out: Path, options: GeneratorOptions, users: ChunkUsers, favourites: dict, header: bool) -> None:
    """The generator's truth about a chunk's users: their taste group, and (once) the strength it was drawn at."""
    folder = out / TRUTH_FOLDER
    folder.mkdir(exist_ok=True)
    if header:
        (folder / "taste.json").write_text(json.dumps({"strength": options.taste_strength, "seed": options.seed,
                                                       "groups_per_gender": TASTE_GROUPS_PER_GENDER}) + "\n")
    _append_csv(pd.DataFrame({"user_id": users.ids, "gender": users.gender, "taste_group": favourites["group"]}),
                folder / "user_taste.csv", header)


def taste_group_tops(strength: float, k: int) -> pd.DataFrame:
    """Each taste group's `k` likeliest products (gender, taste_group, product_id, probability) at `strength`, as
    <out>/_truth/taste.json records it for generated data; its users are in <out>/_truth/user_taste.csv."""
    cat = build_catalogue()
    taste = build_taste(cat)
    ids = cat.frame["id"].to_numpy().astype("int64")
    tops = []
    for gender in ("F", "M"):
        for group in range(TASTE_GROUPS_PER_GENDER):
            p = taste_probabilities(taste, gender, group, strength)
            top = np.argsort(-p, kind="stable")[:k]
            tops.append(pd.DataFrame({"gender": gender, "taste_group": group, "product_id": ids[top], "probability": p[top]}))
    return pd.concat(tops, ignore_index=True)


# --- one chunk of users and everything they cause -------------------------------------

@dataclass
class IdCounters:
    user: int = 1
    order: int = 1
    order_item: int = 1
    inventory: int = 1
    event: int = 1


def _uuid4(rng, n: int) -> np.ndarray:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexes = [r.tobytes().hex() for r in raw]
    return np.array([f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in hexes], dtype=object)


def _ip_addresses(rng, n: int) -> np.ndarray:
    octets = rng.integers(1, 255, size=(4, n)).tolist()
    return np.array([f"{a}.{b}.{c}.{d}" for a, b, c, d in zip(*octets, strict=True)], dtype=object)


@dataclass(frozen=True)
class ChunkUsers:
    ids: np.ndarray
    gender: np.ndarray  # "M" / "F"
    created: np.ndarray  # epoch seconds
    location: np.ndarray  # row of LOCATIONS


@dataclass(frozen=True)
class ChunkOrders:
    user: np.ndarray  # row of ChunkUsers
    ids: np.ndarray
    status: np.ndarray
    n_items: np.ndarray
    created: np.ndarray
    shipped: np.ndarray
    delivered: np.ndarray
    returned: np.ndarray
    shipped_ok: np.ndarray  # the status implies the timestamp; NULL otherwise
    delivered_ok: np.ndarray
    returned_ok: np.ndarray


@dataclass(frozen=True)
class ChunkItems:
    order: np.ndarray  # row of ChunkOrders
    user: np.ndarray  # row of ChunkUsers
    product: np.ndarray  # row of the catalogue
    ids: np.ndarray
    created: np.ndarray


LOCATION_TABLE = np.array([r[:4] for r in LOCATIONS], dtype=object)  # country, state, city, postal code


# The draws below happen in one fixed order per chunk (users, favourites, orders, items,
# inventory, order items, events): that order is what makes the same seed give the same bytes.

def draw_users(rng, n_users: int, ids: IdCounters, as_of: int) -> tuple[pd.DataFrame, ChunkUsers]:
    gender = np.where(rng.random(n_users) < 0.5, "M", "F").astype(object)
    user_ids = np.arange(ids.user, ids.user + n_users)
    ids.user += n_users
    loc_w = np.array([r[6] for r in LOCATIONS])
    loc = rng.choice(len(LOCATIONS), n_users, p=loc_w / loc_w.sum())
    lat = np.array([r[4] for r in LOCATIONS])[loc] + rng.normal(0, 0.05, n_users)
    lon = np.array([r[5] for r in LOCATIONS])[loc] + rng.normal(0, 0.05, n_users)
    recent = rng.random(n_users) < 0.025
    created = np.where(recent, rng.integers(as_of - 7 * DAY, as_of, n_users),
                       rng.integers(START, as_of, n_users)) // MINUTE * MINUTE
    first = np.where(gender == "M", np.array(FIRST_NAMES["M"], object)[rng.integers(0, len(FIRST_NAMES["M"]), n_users)],
                     np.array(FIRST_NAMES["F"], object)[rng.integers(0, len(FIRST_NAMES["F"]), n_users)])
    last = np.array(LAST_NAMES, object)[rng.integers(0, len(LAST_NAMES), n_users)]
    tld = np.array(["com", "org", "net"], object)[rng.integers(0, 3, n_users)]
    lat_s, lon_s = np.char.mod("%.10g", lat).astype(object), np.char.mod("%.10g", lon).astype(object)
    unit = np.where(rng.random(n_users) < 0.3,
                    np.array([" Apt. ", " Suite "], object)[rng.integers(0, 2, n_users)]
                    + rng.integers(1, 999, n_users).astype(str), "")
    frame = pd.DataFrame({
        "id": format_ids(user_ids), "first_name": first, "last_name": last,
        "email": (pd.Series(first).str.lower() + pd.Series(last).str.lower() + "@example." + tld).to_numpy(object),
        "age": rng.integers(12, 71, n_users).astype(str).astype(object), "gender": gender,
        "state": LOCATION_TABLE[loc, 1],
        "street_address": (rng.integers(1, 99_999, n_users).astype(str).astype(object) + " "
                           + np.array(LAST_NAMES, object)[rng.integers(0, len(LAST_NAMES), n_users)] + " "
                           + np.array(STREET_SUFFIXES, object)[rng.integers(0, len(STREET_SUFFIXES), n_users)] + unit),
        "postal_code": LOCATION_TABLE[loc, 3], "city": LOCATION_TABLE[loc, 2], "country": LOCATION_TABLE[loc, 0],
        "latitude": lat_s, "longitude": lon_s, "traffic_source": _choice(rng, USER_TRAFFIC, n_users),
        "created_at": format_timestamps(created, rng, as_of=as_of),
        "user_geom": ("POINT(" + lon_s + " " + lat_s + ")"),
    })
    return frame, ChunkUsers(user_ids, gender, created, loc)


def draw_orders(rng, users: ChunkUsers, ids: IdCounters, as_of: int) -> tuple[pd.DataFrame, ChunkOrders]:
    """0-4 orders per user, placed uniformly between the user's creation and as_of; the status
    decides which of shipped/delivered/returned exist, with the real rate of ordering anomalies."""
    o_user = _repeat_index(_choice(rng, ORDERS_PER_USER, len(users.ids)).astype(np.int64))
    n_o = len(o_user)
    user_created = users.created[o_user]
    created = (user_created + (rng.random(n_o) * (as_of - user_created)).astype(np.int64)) // MINUTE * MINUTE
    status = _choice(rng, ORDER_STATUS, n_o)
    shipped_ok = np.isin(status, ["Shipped", "Complete", "Returned"])
    delivered_ok = np.isin(status, ["Complete", "Returned"])
    returned_ok = status == "Returned"
    shipped = (created + rng.integers(0, 3 * DAY, n_o)) // MINUTE * MINUTE
    delivered = (shipped + rng.integers(0, 5 * DAY, n_o)) // MINUTE * MINUTE
    returned = (delivered + rng.integers(0, 3 * DAY, n_o)) // MINUTE * MINUTE
    for name, rate in ANOMALY_RATES.items():
        hit = rng.random(n_o) < rate
        if name == "shipped_before_created":
            shipped = np.where(hit & shipped_ok, created - rng.integers(HOUR, 2 * DAY, n_o), shipped)
        elif name == "delivered_before_shipped":
            delivered = np.where(hit & delivered_ok, shipped - rng.integers(HOUR, DAY, n_o), delivered)
        else:
            returned = np.where(hit & returned_ok, delivered - rng.integers(HOUR, DAY, n_o), returned)
    n_items = _choice(rng, ITEMS_PER_ORDER, n_o).astype(np.int64)
    order_ids = np.arange(ids.order, ids.order + n_o)
    ids.order += n_o
    frame = pd.DataFrame({
        "order_id": format_ids(order_ids), "user_id": format_ids(users.ids[o_user]), "status": status,
        "gender": users.gender[o_user],
        "created_at": format_timestamps(created, rng, as_of=as_of),
        "returned_at": format_timestamps(returned, rng, returned_ok, as_of),
        "shipped_at": format_timestamps(shipped, rng, shipped_ok, as_of),
        "delivered_at": format_timestamps(delivered, rng, delivered_ok, as_of),
        "num_of_item": n_items.astype(str).astype(object),
    })
    return frame, ChunkOrders(o_user, order_ids, status, n_items, created, shipped, delivered, returned,
                              shipped_ok, delivered_ok, returned_ok)


def draw_items(rng, users: ChunkUsers, orders: ChunkOrders, ids: IdCounters, cat: Catalogue,
               taste: TasteModel | None, favourites: dict | None, strength: float) -> ChunkItems:
    """1-4 items per order, each created up to 4 h before its order."""
    i_order = _repeat_index(orders.n_items)
    i_user = orders.user[i_order]
    product = pick_products(rng, cat, taste, users.gender, i_user, favourites, strength)
    created = orders.created[i_order] - rng.integers(0, 4 * HOUR, len(i_order))
    item_ids = np.arange(ids.order_item, ids.order_item + len(i_order))
    ids.order_item += len(i_order)
    return ChunkItems(i_order, i_user, product, item_ids, created)


def inventory_frame(rng, items: ChunkItems, ids: IdCounters, cat: Catalogue, as_of: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Each sold unit (created 0-60 days before its sale) and 1-3 units of the product that never
    sell; returns the frame and the sold units' ids, one per order item."""
    n_unsold = _choice(rng, UNSOLD_PER_SOLD, len(items.ids)).astype(np.int64)
    group = _repeat_index(1 + n_unsold)
    is_sold = _position_in_group(1 + n_unsold) == 0
    inv_ids = np.arange(ids.inventory, ids.inventory + len(group))
    ids.inventory += len(group)
    created = items.created[group] - rng.integers(0, 60 * DAY, len(group))
    p = cat.frame.iloc[items.product[group]]
    frame = pd.DataFrame({
        "id": format_ids(inv_ids), "product_id": format_ids(p["id"].to_numpy()),
        "created_at": format_timestamps(created, rng, as_of=as_of),
        "sold_at": format_timestamps(items.created[group], rng, is_sold, as_of),
        "cost": format_float32(p["cost"].to_numpy()), "product_category": p["category"].to_numpy(object),
        "product_name": p["name"].to_numpy(object), "product_brand": p["brand"].to_numpy(object),
        "product_retail_price": format_float32(p["retail_price"].to_numpy()),
        "product_department": p["department"].to_numpy(object), "product_sku": p["sku"].to_numpy(object),
        "product_distribution_center_id": format_ids(p["distribution_center_id"].to_numpy()),
    })
    return frame, inv_ids[is_sold]


def order_items_frame(rng, users: ChunkUsers, orders: ChunkOrders, items: ChunkItems,
                      sold_inventory_ids: np.ndarray, cat: Catalogue, as_of: int) -> pd.DataFrame:
    """An item takes its order's status and timestamps and sells at the product's retail price."""
    p = cat.frame.iloc[items.product]
    o = items.order
    return pd.DataFrame({
        "id": format_ids(items.ids), "order_id": format_ids(orders.ids[o]),
        "user_id": format_ids(users.ids[items.user]), "product_id": format_ids(p["id"].to_numpy()),
        "inventory_item_id": format_ids(sold_inventory_ids), "status": orders.status[o],
        "created_at": format_timestamps(items.created, rng, as_of=as_of),
        "shipped_at": format_timestamps(orders.shipped[o], rng, orders.shipped_ok[o], as_of),
        "delivered_at": format_timestamps(orders.delivered[o], rng, orders.delivered_ok[o], as_of),
        "returned_at": format_timestamps(orders.returned[o], rng, orders.returned_ok[o], as_of),
        "sale_price": format_float32(p["retail_price"].to_numpy()),
    })


def generate_chunk(rng, n_users: int, ids: IdCounters, cat: Catalogue, taste: TasteModel | None,
                   as_of: int, strength: float = 1.0) -> tuple[dict[str, pd.DataFrame], ChunkUsers, dict | None]:
    """A chunk's tables, its users and their tastes (None without taste)."""
    users_frame, users = draw_users(rng, n_users, ids, as_of)
    favourites = user_favourites(rng, taste, users.gender) if taste else None
    orders_frame, orders = draw_orders(rng, users, ids, as_of)
    items = draw_items(rng, users, orders, ids, cat, taste, favourites, strength)
    inventory, sold_inventory_ids = inventory_frame(rng, items, ids, cat, as_of)
    order_items = order_items_frame(rng, users, orders, items, sold_inventory_ids, cat, as_of)
    events = events_frame(rng, users, orders, items, ids, cat, as_of)
    return ({"users": users_frame, "orders": orders_frame, "order_items": order_items,
             "inventory_items": inventory, "events": events}, users, favourites)


def events_frame(rng, users: ChunkUsers, orders: ChunkOrders, items: ChunkItems, ids: IdCounters,
                 cat: Catalogue, as_of: int) -> pd.DataFrame:
    # One session per order item. Single-item order: home, department, product, cart, purchase.
    # n > 1 items: (department, product, cart) x n, then purchase: 3n + 1 events.
    n_in_order = orders.n_items[items.order]
    s_len = np.where(n_in_order == 1, 5, 3 * n_in_order + 1)
    pos = _position_in_group(s_len)
    sess = _repeat_index(s_len)
    single = n_in_order[sess] == 1
    last = pos == s_len[sess] - 1
    multi_kind = np.array(["department", "product", "cart"], object)[pos % 3]
    single_kind = np.array(["home", "department", "product", "cart", "purchase"], object)[np.minimum(pos, 4)]
    kind = np.where(single, single_kind, np.where(last, "purchase", multi_kind))
    session_user = items.user[sess]
    order_ev = {
        "session": sess, "pos": pos, "kind": kind, "product": items.product[sess],
        "user": users.ids[session_user], "loc": users.location[session_user],
        "start": items.created[sess], "step_max": 3 * MINUTE, "n_sessions": len(s_len),
    }
    # Ghost sessions: 5 per user, anonymous, a random product of a random gender.
    n_g = GHOST_SESSIONS_PER_USER * len(users.ids)
    seq_choice = rng.integers(0, len(GHOST_SEQUENCES), n_g)
    g_len = np.array([len(s) for s in GHOST_SEQUENCES])[seq_choice]
    g_sess = _repeat_index(g_len)
    g_pos = _position_in_group(g_len)
    flat = np.array([k for s in GHOST_SEQUENCES for k in s], object)
    offsets = np.cumsum([0] + [len(s) for s in GHOST_SEQUENCES])[:-1]
    g_kind = flat[offsets[seq_choice[g_sess]] + g_pos]
    all_products = np.arange(len(cat.frame))
    ghost_ev = {
        "session": g_sess, "pos": g_pos, "kind": g_kind,
        "product": all_products[rng.integers(0, len(all_products), n_g)][g_sess],
        "user": None, "loc": rng.integers(0, len(LOCATION_TABLE), n_g)[g_sess],
        "start": rng.integers(START, as_of, n_g)[g_sess] // MINUTE * MINUTE, "step_max": 30 * MINUTE,
        "n_sessions": n_g,
    }
    frames = [_event_frame(rng, ids, cat, as_of, ev) for ev in (order_ev, ghost_ev)]
    return pd.concat(frames, ignore_index=True)


def _event_frame(rng, ids, cat, as_of, ev) -> pd.DataFrame:
    sess, pos, kind, product = ev["session"], ev["pos"], ev["kind"], ev["product"]
    n = len(sess)
    steps = rng.integers(0, ev["step_max"] + 1, n)
    steps[pos == 0] = 0
    # cumulative time within each session
    cum = np.cumsum(steps)
    session_start_cum = np.repeat(cum[np.flatnonzero(pos == 0)], np.bincount(sess))
    created = ev["start"] + (cum - session_start_cum)
    n_s = ev["n_sessions"]
    session_ids = _uuid4(rng, n_s)[sess]
    ip = _ip_addresses(rng, n_s)[sess]
    browser = _choice(rng, BROWSERS, n_s)[sess]
    traffic = _choice(rng, EVENT_TRAFFIC, n_s)[sess]
    product_ids = cat.frame["id"].to_numpy()[product]
    uri = np.select(
        [kind == "product", kind == "department", kind == "home", kind == "cart", kind == "purchase"],
        ["/product/" + product_ids.astype(str).astype(object), cat.dept_uri[product], "/home", "/cart", "/purchase"],
        "/cancel",
    ).astype(object)
    event_ids = np.arange(ids.event, ids.event + n)
    ids.event += n
    user = ev["user"]
    return pd.DataFrame({
        "id": format_ids(event_ids),
        "user_id": np.full(n, "", object) if user is None else format_ids(user),
        "sequence_number": (pos + 1).astype(str).astype(object), "session_id": session_ids,
        "created_at": format_timestamps(created, rng, as_of=as_of), "ip_address": ip,
        "city": LOCATION_TABLE[ev["loc"], 2], "state": LOCATION_TABLE[ev["loc"], 1],
        "postal_code": LOCATION_TABLE[ev["loc"], 3], "browser": browser, "traffic_source": traffic,
        "uri": uri, "event_type": kind,
    })


def _append_csv(frame: pd.DataFrame, path: Path, header: bool) -> None:
    frame.to_csv(path, mode="w" if header else "a", header=header, index=False, lineterminator="\n")


def generate(out: str | Path, options: GeneratorOptions = GeneratorOptions(), progress=None) -> dict[str, int]:
    """Write the 7 tables to `out/<table>.csv`; returns rows written per table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    as_of = int(np.datetime64(options.as_of, "s").astype(np.int64))
    cat = build_catalogue()
    taste = build_taste(cat) if options.taste else None
    counts: dict[str, int] = {}
    static = {"products": products_csv_frame(cat), "distribution_centers": distribution_centers_csv_frame()}
    for table, frame in static.items():
        _append_csv(frame, out / f"{table}.csv", header=True)
        counts[table] = len(frame)
    total_users = max(1, round(USERS_AT_SCALE_1 * options.scale))
    ids = IdCounters()
    for chunk, start in enumerate(range(0, total_users, CHUNK_USERS)):
        rng = np.random.default_rng([options.seed, chunk])
        frames, users, favourites = generate_chunk(rng, min(CHUNK_USERS, total_users - start), ids, cat, taste, as_of,
                                                   options.taste_strength)
        if favourites is not None:
            write_truth(out, options, users, favourites, header=chunk == 0)
        for table, frame in frames.items():
            _append_csv(frame, out / f"{table}.csv", header=chunk == 0)
            counts[table] = counts.get(table, 0) + len(frame)
        if progress:
            progress(min(start + CHUNK_USERS, total_users), total_users)
    return counts
