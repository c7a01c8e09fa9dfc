"""Generate ``supermarket.yaml``: a 50 m x 40 m store, too big to write by hand.

Run from the repository root::

    .venv/bin/python examples/stores/generate_supermarket.py > examples/stores/supermarket.yaml

The output is deterministic (no clock, no unseeded randomness), so regenerating it gives a
byte-identical file unless this script changed. The camera helpers are also how the
convenience store's calibrations were made: each camera is a pinhole camera at a known
pose, and its calibration points are floor marks projected through it, so the fitted
homography reproduces them to a fraction of a millimetre.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterator, Sequence

import numpy as np
from shapely.geometry import Polygon

WIDTH, DEPTH = 50.0, 40.0  # x: west→east along the shop front, y: front (south) → back
WALL = 0.6  # depth of a wall shelf
GONDOLA = 1.2  # depth of a two-sided gondola (two 0.6 m faces)
FRONT_STRIP = 0.8  # depth of the shelf_front zone in front of each face
AISLES_PER_BLOCK = 12
BLOCKS = (("A", 10.0, 20.5), ("B", 23.5, 34.0))  # gondola blocks: name, y from, y to
BACK_WALL = (36.9, 37.5)  # the back wall shelves; staff area behind them
CAMERA_GRID = (8, 8)  # columns (x), rows (y)
CAMERA_HEIGHT = 4.5
IMAGE = (640, 480)
FOCAL_PX = 390.0  # a ~79° lens: 7.4 m x 5.5 m of floor from 4.5 m up
DOOR_DETECT = "{fps: 10}"  # cameras on a door or the gates follow every step across the line
CROWD_DETECT = "{interval_s: 4}"  # the others count and place people: a frame every 4 s

# (aisle title, age restricted?, products as "name: price")
AISLES: list[tuple[str, bool, list[str]]] = [
    (
        "Fruit & vegetables",
        False,
        [
            "Bananas 1 kg: 1.89",
            "Apples Elstar 1 kg: 2.49",
            "Oranges 1.5 kg: 2.99",
            "Tomatoes 500 g: 1.79",
            "Cucumber: 0.89",
            "Carrots 1 kg: 1.19",
            "Onions 1 kg: 1.09",
            "Potatoes 2.5 kg: 2.79",
            "Broccoli: 1.29",
            "Avocado ripe 2 pcs: 2.49",
        ],
    ),
    (
        "Bakery & bread",
        False,
        [
            "Wholemeal loaf 800 g: 1.99",
            "White sliced bread 800 g: 1.49",
            "Sourdough loaf: 3.49",
            "Croissants 4 pcs: 2.29",
            "Bagels plain 4 pcs: 1.99",
            "Pita bread 6 pcs: 1.29",
            "Tortilla wraps 8 pcs: 1.79",
            "Brioche rolls 6 pcs: 2.49",
            "Rye crispbread 250 g: 1.59",
            "Cinnamon buns 2 pcs: 2.19",
        ],
    ),
    (
        "Breakfast & cereals",
        False,
        [
            "Cornflakes 500 g: 2.39",
            "Rolled oats 1 kg: 1.69",
            "Muesli fruit & nut 750 g: 3.29",
            "Granola honey 500 g: 3.49",
            "Chocolate cereal 375 g: 2.89",
            "Peanut butter 350 g: 2.49",
            "Strawberry jam 450 g: 1.99",
            "Honey squeeze 350 g: 3.19",
            "Chocolate spread 400 g: 3.29",
            "Rice cakes 130 g: 1.09",
        ],
    ),
    (
        "Coffee & tea",
        False,
        [
            "Ground coffee 500 g: 5.49",
            "Coffee beans 1 kg: 11.99",
            "Instant coffee 200 g: 6.49",
            "Coffee capsules 10 pcs: 3.29",
            "Decaf ground coffee 250 g: 3.99",
            "English breakfast tea 80 bags: 3.49",
            "Green tea 20 bags: 1.99",
            "Peppermint tea 20 bags: 1.89",
            "Rooibos tea 20 bags: 2.09",
            "Hot chocolate 400 g: 3.79",
        ],
    ),
    (
        "Pasta, rice & grains",
        False,
        [
            "Spaghetti 500 g: 1.29",
            "Penne 500 g: 1.29",
            "Fusilli 500 g: 1.29",
            "Lasagne sheets 250 g: 1.69",
            "Egg tagliatelle 250 g: 1.99",
            "Basmati rice 1 kg: 2.99",
            "Jasmine rice 1 kg: 2.89",
            "Risotto rice 500 g: 2.49",
            "Couscous 500 g: 1.59",
            "Quinoa 400 g: 3.49",
        ],
    ),
    (
        "Canned & jarred",
        False,
        [
            "Chopped tomatoes 400 g: 0.79",
            "Tomato passata 500 g: 1.09",
            "Chickpeas 400 g: 0.89",
            "Kidney beans 400 g: 0.89",
            "Baked beans 415 g: 1.19",
            "Sweetcorn 340 g: 1.09",
            "Tuna in olive oil 160 g: 2.29",
            "Sardines 120 g: 1.69",
            "Chicken soup 400 ml: 1.79",
            "Pickled gherkins 670 g: 1.99",
        ],
    ),
    (
        "Sauces, oils & condiments",
        False,
        [
            "Olive oil extra virgin 750 ml: 7.99",
            "Sunflower oil 1 l: 2.79",
            "Balsamic vinegar 250 ml: 2.49",
            "Tomato ketchup 500 ml: 2.29",
            "Mayonnaise 500 ml: 2.69",
            "Mustard Dijon 200 g: 1.79",
            "Pesto Genovese 190 g: 2.99",
            "Soy sauce 250 ml: 2.19",
            "Sea salt 750 g: 0.99",
            "Black pepper mill 50 g: 2.59",
        ],
    ),
    (
        "Baking & sugar",
        False,
        [
            "Plain flour 1 kg: 1.19",
            "Self-raising flour 1 kg: 1.29",
            "Caster sugar 1 kg: 1.49",
            "Brown sugar 500 g: 1.39",
            "Baking powder 5 x 16 g: 0.99",
            "Dried yeast 7 x 7 g: 1.19",
            "Vanilla extract 38 ml: 3.49",
            "Cocoa powder 250 g: 2.99",
            "Dark chocolate drops 200 g: 2.49",
            "Ground almonds 200 g: 3.29",
        ],
    ),
    (
        "World foods",
        False,
        [
            "Coconut milk 400 ml: 1.49",
            "Thai green curry paste 195 g: 2.49",
            "Egg noodles 250 g: 1.39",
            "Rice noodles 250 g: 1.59",
            "Sweet chilli sauce 300 ml: 1.99",
            "Taco shells 12 pcs: 2.19",
            "Salsa medium 300 g: 2.29",
            "Refried beans 430 g: 1.99",
            "Naan bread 2 pcs: 1.69",
            "Mango chutney 340 g: 2.19",
        ],
    ),
    (
        "Snacks & crisps",
        False,
        [
            "Sea salt crisps 150 g: 1.79",
            "Paprika crisps 150 g: 1.79",
            "Tortilla chips 200 g: 1.99",
            "Salted peanuts 250 g: 1.89",
            "Mixed nuts 200 g: 3.49",
            "Pretzels 250 g: 1.49",
            "Popcorn sweet & salty 100 g: 1.69",
            "Rice crackers 100 g: 1.59",
            "Cheese crackers 150 g: 1.99",
            "Trail mix 200 g: 2.99",
        ],
    ),
    (
        "Sweets & chocolate",
        False,
        [
            "Milk chocolate bar 100 g: 1.29",
            "Dark chocolate 70% 100 g: 1.79",
            "Hazelnut chocolate 100 g: 1.49",
            "Chocolate biscuits 300 g: 2.29",
            "Butter cookies 400 g: 2.99",
            "Wine gums 200 g: 1.49",
            "Liquorice 200 g: 1.69",
            "Chewing gum mint 10 pcs: 1.19",
            "Caramel wafers 8 pcs: 2.19",
            "Stroopwafels 8 pcs: 2.49",
        ],
    ),
    (
        "Soft drinks & water",
        False,
        [
            "Still water 1.5 l: 0.59",
            "Sparkling water 1.5 l: 0.69",
            "Cola 1.5 l: 1.99",
            "Cola zero 1.5 l: 1.99",
            "Lemonade 1.5 l: 1.59",
            "Orange soda 1.5 l: 1.69",
            "Iced tea peach 1.5 l: 1.79",
            "Energy drink 250 ml: 1.49",
            "Tonic water 4 x 200 ml: 2.99",
            "Sports drink 500 ml: 1.39",
        ],
    ),
    (
        "Juices & smoothies",
        False,
        [
            "Orange juice 1 l: 2.49",
            "Apple juice 1 l: 1.99",
            "Multivitamin juice 1 l: 2.19",
            "Cranberry juice 1 l: 2.79",
            "Tomato juice 1 l: 1.99",
            "Grapefruit juice 1 l: 2.29",
            "Mango smoothie 750 ml: 3.49",
            "Berry smoothie 750 ml: 3.49",
            "Coconut water 1 l: 3.29",
            "Elderflower cordial 500 ml: 2.99",
        ],
    ),
    (
        "Beer & cider",
        True,
        [
            "Pilsner 6 x 330 ml: 5.49",
            "Pilsner crate 24 x 300 ml: 16.99",
            "IPA 4 x 330 ml: 6.99",
            "Wheat beer 500 ml: 1.69",
            "Stout 4 x 440 ml: 6.49",
            "Belgian tripel 330 ml: 1.99",
            "Apple cider 4 x 330 ml: 5.29",
            "Pear cider 500 ml: 1.89",
            "Alcohol-free pilsner 6 x 330 ml: 4.99",
            "Alcohol-free IPA 330 ml: 1.29",
        ],
    ),
    (
        "Wine",
        True,
        [
            "Rioja red 750 ml: 7.49",
            "Chianti 750 ml: 8.99",
            "Merlot 750 ml: 5.99",
            "Sauvignon blanc 750 ml: 6.99",
            "Chardonnay 750 ml: 6.49",
            "Pinot grigio 750 ml: 5.99",
            "Rosé 750 ml: 5.49",
            "Prosecco 750 ml: 8.49",
            "Cava brut 750 ml: 7.29",
            "Alcohol-free white wine 750 ml: 4.49",
        ],
    ),
    (
        "Spirits",
        True,
        [
            "Vodka 700 ml: 14.99",
            "London dry gin 700 ml: 19.99",
            "Scotch whisky 700 ml: 24.99",
            "White rum 700 ml: 16.99",
            "Spiced rum 700 ml: 19.49",
            "Tequila blanco 700 ml: 22.99",
            "Jenever 1 l: 15.99",
            "Amaretto 700 ml: 13.99",
            "Coffee liqueur 700 ml: 15.49",
            "Alcohol-free gin 700 ml: 17.99",
        ],
    ),
    (
        "Frozen pizza & meals",
        False,
        [
            "Pizza margherita 340 g: 2.99",
            "Pizza pepperoni 370 g: 3.49",
            "Lasagne 1 kg: 5.99",
            "Chicken tikka masala 400 g: 3.99",
            "Fish fingers 10 pcs: 2.79",
            "Chicken nuggets 500 g: 3.99",
            "Veggie burgers 4 pcs: 3.49",
            "Spring rolls 12 pcs: 2.99",
            "Oven chips 1 kg: 2.29",
            "Garlic bread 2 pcs: 1.99",
        ],
    ),
    (
        "Frozen vegetables & ice cream",
        False,
        [
            "Garden peas 1 kg: 1.99",
            "Spinach 450 g: 1.49",
            "Mixed vegetables 1 kg: 2.19",
            "Berry mix 500 g: 3.49",
            "Vanilla ice cream 1 l: 3.29",
            "Chocolate ice cream 1 l: 3.29",
            "Ice lollies 6 pcs: 2.99",
            "Cornettos 4 pcs: 3.99",
            "Sorbet lemon 500 ml: 2.79",
            "Ice cubes 2 kg: 1.49",
        ],
    ),
    (
        "Baby & toddler",
        False,
        [
            "Nappies size 4 44 pcs: 12.99",
            "Baby wipes 3 x 64 pcs: 4.49",
            "Infant milk 800 g: 14.99",
            "Baby porridge 250 g: 2.99",
            "Fruit pouch apple 90 g: 0.99",
            "Baby shampoo 300 ml: 3.49",
            "Nappy cream 100 ml: 4.99",
            "Teething biscuits 12 pcs: 2.29",
            "Toddler milk 1 l: 1.99",
            "Cotton buds 200 pcs: 1.49",
        ],
    ),
    (
        "Health & beauty",
        False,
        [
            "Toothpaste 75 ml: 1.99",
            "Toothbrush medium: 2.49",
            "Shampoo 400 ml: 3.99",
            "Conditioner 400 ml: 3.99",
            "Shower gel 250 ml: 2.29",
            "Deodorant spray 150 ml: 2.99",
            "Hand cream 75 ml: 2.49",
            "Sunscreen SPF 30 200 ml: 8.99",
            "Plasters 40 pcs: 2.79",
            "Paracetamol 500 mg 20 pcs: 1.29",
        ],
    ),
    (
        "Household cleaning",
        False,
        [
            "Washing-up liquid 500 ml: 1.79",
            "Dishwasher tablets 40 pcs: 7.99",
            "All-purpose cleaner 1 l: 2.29",
            "Bathroom cleaner 750 ml: 2.79",
            "Bleach 1 l: 1.49",
            "Glass cleaner 750 ml: 2.19",
            "Sponges 5 pcs: 1.29",
            "Bin bags 20 pcs: 2.49",
            "Microfibre cloths 3 pcs: 2.99",
            "Rubber gloves medium: 1.99",
        ],
    ),
    (
        "Laundry & paper",
        False,
        [
            "Laundry liquid 1.5 l: 8.99",
            "Laundry pods 30 pcs: 9.49",
            "Fabric softener 1 l: 3.49",
            "Stain remover 500 ml: 4.29",
            "Toilet paper 12 rolls: 5.99",
            "Kitchen roll 4 rolls: 3.49",
            "Tissues 3 x 80 pcs: 2.49",
            "Paper napkins 50 pcs: 1.29",
            "Aluminium foil 20 m: 2.59",
            "Cling film 30 m: 1.99",
        ],
    ),
    (
        "Pet food",
        False,
        [
            "Dry cat food 2 kg: 7.99",
            "Wet cat food 12 x 85 g: 5.49",
            "Cat litter 10 l: 4.99",
            "Dry dog food 3 kg: 9.99",
            "Wet dog food 6 x 400 g: 6.49",
            "Dog treats 200 g: 2.99",
            "Bird seed 1 kg: 2.49",
            "Fish flakes 50 g: 3.29",
            "Cat treats 60 g: 1.99",
            "Poop bags 120 pcs: 3.49",
        ],
    ),
    (
        "Home & seasonal",
        False,
        [
            "AA batteries 4 pcs: 4.99",
            "AAA batteries 4 pcs: 4.99",
            "LED bulb E27: 3.99",
            "Tea lights 50 pcs: 3.49",
            "Matches 10 boxes: 1.49",
            "Barbecue charcoal 3 kg: 6.99",
            "Firelighters 28 pcs: 1.99",
            "Greeting card: 2.49",
            "Gift wrap 3 m: 2.99",
            "Reusable shopping bag: 0.99",
        ],
    ),
]

BACK: list[tuple[str, list[str]]] = [
    (
        "Milk & cream",
        [
            "Whole milk 1 l: 1.19",
            "Semi-skimmed milk 1 l: 1.09",
            "Oat drink 1 l: 1.99",
            "Whipping cream 250 ml: 1.69",
        ],
    ),
    (
        "Yoghurt & desserts",
        [
            "Greek yoghurt 500 g: 2.29",
            "Vanilla custard 1 l: 1.79",
            "Strawberry yoghurt 4 x 125 g: 1.99",
            "Chocolate mousse 4 pcs: 2.49",
        ],
    ),
    (
        "Cheese",
        [
            "Gouda young 400 g: 4.49",
            "Mature cheddar 350 g: 3.99",
            "Mozzarella 125 g: 0.99",
            "Grated parmesan 100 g: 2.79",
        ],
    ),
    (
        "Butter & eggs",
        [
            "Butter 250 g: 2.89",
            "Free-range eggs 10 pcs: 3.29",
            "Margarine 500 g: 1.99",
            "Organic eggs 6 pcs: 2.99",
        ],
    ),
    (
        "Fresh meat",
        [
            "Minced beef 500 g: 4.99",
            "Pork chops 4 pcs: 5.49",
            "Beef steak 2 x 200 g: 9.99",
            "Sausages 6 pcs: 3.49",
        ],
    ),
    (
        "Poultry",
        [
            "Chicken breast 500 g: 5.99",
            "Chicken thighs 1 kg: 6.49",
            "Whole chicken 1.4 kg: 7.99",
            "Turkey slices 150 g: 2.49",
        ],
    ),
    (
        "Fish & seafood",
        [
            "Salmon fillets 2 pcs: 6.99",
            "Cod fillets 400 g: 6.49",
            "Cooked prawns 200 g: 4.99",
            "Smoked salmon 100 g: 3.99",
        ],
    ),
    (
        "Deli & ready to eat",
        [
            "Hummus 200 g: 1.99",
            "Chicken sandwich: 3.29",
            "Pasta salad 350 g: 3.49",
            "Sushi box 8 pcs: 6.99",
        ],
    ),
]


# -- cameras (also used for examples/stores/convenience.yaml) --------------------------------


def overhead_camera(
    cx: float,
    cy: float,
    height: float,
    focal: float,
    image: tuple[int, int],
    roll_deg: float = 0.0,
    tilt_deg: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The floor → image homography of a pinhole camera at (cx, cy, height) looking down.

    Image "up" points north (+y) before ``roll_deg``; ``tilt_deg`` tips the optical axis a
    little about the camera's x and y axes, as a real ceiling mount does.
    """
    w, h = image
    k = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]])
    down = np.array([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])  # rows: camera x, y, z in world axes
    r = _rot_z(roll_deg) @ _rot_x(tilt_deg[0]) @ _rot_y(tilt_deg[1]) @ down
    centre = np.array([cx, cy, height])
    m = k @ np.column_stack([r[:, 0], r[:, 1], -r @ centre])
    return m / m[2, 2]


def _rot_x(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _apply(m: np.ndarray, x: float, y: float) -> tuple[float, float]:
    q = m @ np.array([x, y, 1.0])
    return float(q[0] / q[2]), float(q[1] / q[2])


def footprint(floor_to_image: np.ndarray, image: tuple[int, int]) -> Polygon:
    """The floor area the whole image shows."""
    inv = np.linalg.inv(floor_to_image)
    w, h = image
    return Polygon([_apply(inv, u, v) for u, v in ((0, 0), (w, 0), (w, h), (0, h))])


def calibration(
    floor_to_image: np.ndarray, image: tuple[int, int], clip: Polygon
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Five (pixel, floor) pairs: floor marks near the image corners and centre.

    Marks are on a 5 cm grid (what a tape measure gives) and inside ``clip`` (the floor),
    pixels are rounded to 0.1 px (what clicking in a zoomed still gives).
    """
    inv = np.linalg.inv(floor_to_image)
    w, h = image
    pairs = []
    for fu, fv in ((0.15, 0.15), (0.85, 0.15), (0.85, 0.85), (0.15, 0.85), (0.5, 0.5)):
        x, y = _apply(inv, fu * w, fv * h)
        x, y = round(x * 20) / 20, round(y * 20) / 20
        if not clip.covers(Polygon([(x, y), (x + 1e-3, y), (x, y + 1e-3)])):
            x0, y0, x1, y1 = clip.bounds
            x, y = min(max(x, x0 + 0.05), x1 - 0.05), min(max(y, y0 + 0.05), y1 - 0.05)
        u, v = _apply(floor_to_image, x, y)
        pairs.append(((round(u, 1), round(v, 1)), (x, y)))
    return pairs


def camera_yaml(
    cam_id: str,
    comment: str,
    cx: float,
    cy: float,
    height: float,
    image: tuple[int, int],
    fps: int,
    m: np.ndarray,
    sees: Sequence[str],
    clip: Polygon,
    detect: str | None = None,
) -> Iterator[str]:
    yield f"  - id: {cam_id}  # {comment}"
    yield "    kind: overhead"
    yield f"    position: [{_n(cx)}, {_n(cy)}, {_n(height)}]"
    yield f"    image: {{width: {image[0]}, height: {image[1]}}}"
    yield f"    fps: {fps}"
    if detect is not None:
        yield f"    detect: {detect}"
    yield from _flow_list("    sees: ", list(sees), indent="      ")
    yield "    calibration:"
    yield "      points:"
    for (u, v), (x, y) in calibration(m, image, clip):
        yield f"        - {{image: [{_n(u)}, {_n(v)}], floor: [{_n(x)}, {_n(y)}]}}"


def sees(m: np.ndarray, image: tuple[int, int], zones: Sequence[tuple[str, Polygon]]) -> list[str]:
    """The zones with a visible part of at least 0.05 m² in the camera's view."""
    view = footprint(m, image)
    return [zid for zid, shape in zones if shape.intersection(view).area >= 0.05]


def _n(v: float) -> str:
    """A coordinate without float noise: 3.0 → 3, 2.5000000001 → 2.5."""
    text = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _flow_list(head: str, items: list[str], indent: str, width: int = 96) -> Iterator[str]:
    line = head + "["
    for i, item in enumerate(items):
        piece = item + (", " if i < len(items) - 1 else "]")
        if len(line) + len(piece) > width and not line.endswith("["):
            yield line.rstrip()
            line = indent
        line += piece
    if not items:
        line += "]"
    yield line


def _pts(points: Sequence[tuple[float, float]]) -> str:
    return "[" + ", ".join(f"[{_n(x)}, {_n(y)}]" for x, y in points) + "]"


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("%", "pct")).strip("-")[:64]


# -- the store -------------------------------------------------------------------------------


def build() -> str:
    out: list[str] = []
    emit = out.append
    zones: list[tuple[str, str, list[tuple[float, float]], str]] = []  # id, kind, ring, note
    shelves: list[tuple[str, str, list[tuple[float, float]], list[str], str]] = []
    catalog: list[tuple[str, str, str, bool]] = []

    def add_products(products: list[str], restricted: bool) -> list[str]:
        skus = []
        for entry in products:
            name, price = entry.rsplit(": ", 1)
            sku = _slug(name)
            age = restricted and not name.lower().startswith("alcohol-free")
            catalog.append((sku, name, price, age))
            skus.append(sku)
        return skus

    # Fixed areas at the front and back.
    zones += [
        ("front", "aisle", _rect(0, 0, WIDTH, BLOCKS[0][1]), "front area: promotions"),
        ("entrance-a", "entrance", _rect(3, 0, 7, 3), "inside west doors"),
        (
            "entrance-a-outside",
            "entrance",
            _rect(2, -4, 8, 0),
            "trolley bay outside the west doors (entrance zones may lie outside the floor)",
        ),
        ("entrance-b", "entrance", _rect(43, 0, 47, 3), "inside east doors"),
        ("exit-gates", "exit_gate", _rect(22, 0, 28, 2), "the gates that issue the receipt"),
        ("checkout-queue", "checkout_queue", _rect(20, 2, 30, 6), "queue in front of the gates"),
        (
            "cross-aisle",
            "aisle",
            _rect(WALL, BLOCKS[0][2], WIDTH - WALL, BLOCKS[1][1]),
            "between the two blocks of aisles",
        ),
        (
            "back-aisle",
            "aisle",
            _rect(WALL, BLOCKS[1][2], WIDTH - WALL, BACK_WALL[0]),
            "along the chilled back wall",
        ),
        (
            "back-of-house",
            "staff_only",
            _rect(0, BACK_WALL[1], WIDTH, DEPTH),
            "stock room, offices, deliveries",
        ),
    ]

    # Aisles: wall | aisle | gondola | aisle | ... | aisle | wall, in two blocks.
    aisle_w = (WIDTH - 2 * WALL - (AISLES_PER_BLOCK - 1) * GONDOLA) / AISLES_PER_BLOCK
    west = [WALL + k * (aisle_w + GONDOLA) for k in range(AISLES_PER_BLOCK)]
    spans = [(round(x, 2), round(x + aisle_w, 2)) for x in west]
    spans[-1] = (spans[-1][0], WIDTH - WALL)  # no rounding drift at the east wall
    n = 0
    for block, y0, y1 in BLOCKS:
        for k in range(AISLES_PER_BLOCK):
            title, restricted, products = AISLES[n]
            n += 1
            aid = f"{block}{k + 1:02d}"
            xw, xe = spans[k]
            zones.append(
                (
                    f"aisle-{aid}",
                    "aisle",
                    _rect(xw, y0, xe, y1),
                    f"Aisle {aid}: {title}, with the shelf fronts on its two sides",
                )
            )
            skus = add_products(products, restricted)
            half = len(skus) // 2
            for side, front, foot, part in (
                (
                    "w",
                    _rect(xw, y0, xw + FRONT_STRIP, y1),
                    _rect(xw - 0.6, y0, xw, y1),
                    skus[:half],
                ),
                (
                    "e",
                    _rect(xe - FRONT_STRIP, y0, xe, y1),
                    _rect(xe, y0, xe + 0.6, y1),
                    skus[half:],
                ),
            ):
                where = "west" if side == "w" else "east"
                zones.append((f"sf-{aid}-{side}", "shelf_front", front, ""))
                shelves.append(
                    (
                        f"{aid}-{side}",
                        f"sf-{aid}-{side}",
                        foot,
                        part,
                        f"{title}, {where} side of aisle {aid}",
                    )
                )
    sections = len(BACK)
    span = (WIDTH - 2 * WALL) / sections
    for i, (title, products) in enumerate(BACK):
        x0, x1 = round(WALL + i * span, 2), round(WALL + (i + 1) * span, 2)
        zid = f"sf-back-{i + 1}"
        zones.append(
            (
                zid,
                "shelf_front",
                _rect(x0, BACK_WALL[0] - FRONT_STRIP, x1, BACK_WALL[0]),
                "Shelf fronts along the chilled back wall" if i == 0 else "",
            )
        )
        shelves.append(
            (
                f"back-{i + 1}",
                zid,
                _rect(x0, BACK_WALL[0], x1, BACK_WALL[1]),
                add_products(products, False),
                f"{title}, chilled back wall",
            )
        )

    floor = Polygon(_rect(0, 0, WIDTH, DEPTH))
    shapes = [(zid, Polygon(ring)) for zid, _, ring, _ in zones]
    kinds = {zid: kind for zid, kind, _, _ in zones}

    emit(HEADER.strip("\n"))
    emit("")
    emit("store:")
    emit("  id: super-01")
    emit("  name: Aisle Supermarket Riverside")
    emit("  currency: EUR")
    emit("  timezone: Europe/Amsterdam")
    emit("")
    emit("# The outline of the sales floor and back of house, metres. x runs west → east along")
    emit("# the shop front, y from the front (south, y = 0) to the back wall (north).")
    emit(f"floor: {_pts(_rect(0, 0, WIDTH, DEPTH))}")
    emit("")
    emit(LINES.strip("\n"))
    emit("")
    emit("# Zones: most specific (smallest) wins when zones overlap, so a shelf front inside an")
    emit("# aisle, or the queue inside the front area, needs no priority of its own.")
    emit("zones:")
    for zid, kind, ring, note in zones:
        if note:
            emit(f"  # {note}")
        emit(f"  - {{id: {zid}, kind: {kind}, polygon: {_pts(ring)}}}")
    emit("")
    emit("# Shelves: footprint is the shelf's floor outline; `zone` is the shelf_front strip a")
    emit("# shopper stands in to reach it. Slots list the SKUs on the shelf, left to right.")
    emit("shelves:")
    rng = random.Random(1)
    for sid, zid, foot, skus, comment in shelves:
        emit(f"  - id: {sid}  # {comment}")
        emit(f"    zone: {zid}")
        emit(f"    footprint: {_pts(foot)}")
        emit("    slots:")
        for sku in skus:
            emit(f"      - {{sku: {sku}, facings: {rng.choice((2, 3, 3, 4, 6))}}}")
    emit("")
    emit(CAMERAS.strip("\n"))
    emit("cameras:")
    cols, rows = CAMERA_GRID
    for j in range(rows):
        for i in range(cols):
            cx, cy = WIDTH * (i + 0.5) / cols, DEPTH * (j + 0.5) / rows
            m = overhead_camera(
                cx,
                cy,
                CAMERA_HEIGHT,
                FOCAL_PX,
                IMAGE,
                roll_deg=rng.uniform(-2, 2),
                tilt_deg=(rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5)),
            )
            cam_id = f"cam-{'ABCDEFGH'[i]}{j + 1}"
            in_view = sees(m, IMAGE, shapes)
            at_door = any(kinds[z] in ("entrance", "exit_gate") for z in in_view)
            out.extend(
                camera_yaml(
                    cam_id,
                    f"ceiling grid column {'ABCDEFGH'[i]}, row {j + 1}",
                    cx,
                    cy,
                    CAMERA_HEIGHT,
                    IMAGE,
                    10,
                    m,
                    in_view,
                    floor,
                    DOOR_DETECT if at_door else CROWD_DETECT,
                )
            )
    emit("")
    emit("# The catalog: price in the store currency with at most 2 decimals; age_restricted")
    emit("# items need an age check before the receipt is issued.")
    emit("catalog:")
    for sku, name, price, age in catalog:
        extra = ", age_restricted: true" if age else ""
        emit(
            f"  - {{sku: {sku}, name: {json.dumps(name, ensure_ascii=False)}, "
            f"price: {price}{extra}}}"
        )
    return "\n".join(out) + "\n"


HEADER = """
# Store layout: Aisle Supermarket Riverside (super-01), about 2,000 m².
#
# GENERATED by examples/stores/generate_supermarket.py: edit the script, not this file,
# then run (from the repository root)
#   .venv/bin/python examples/stores/generate_supermarket.py > examples/stores/supermarket.yaml
#
# Units are metres on the floor plan (x east, y north), pixels in camera images.
# Reference for every field: docs/layout.md. Check a change with core.layout.check_layout
# before deploying it: it lists every problem with its line number.
#
#   y=40 +-------------------------------------------------------+
#        |  back of house (staff only)                           |
#   y=37 |===== chilled back wall: dairy, meat, fish, deli ======|
#        |  back aisle                                           |
#   y=34 ||  B01  ||  B02  ||  ...   12 aisles   ...  ||  B12  ||
#   y=23 |  cross aisle                                          |
#   y=20 ||  A01  ||  A02  ||  ...   12 aisles   ...  ||  A12  ||
#   y=10 |  front: promotions           [ queue ]                |
#    y=0 +---[entrance A]-------------[exit gates]----[entrance B]+
#             x=3..7                   x=22..28        x=43..47
"""

LINES = """
# Counting lines. A line is walked from its first point to its second; in_side says which
# side of it is the inside of the store (here: left, i.e. north, for all doors). Crossing
# towards in_side counts +1 (in), away from it -1 (out).
lines:
  - {id: entrance-a, kind: entrance, points: [[3, 0], [7, 0]], in_side: left}   # west doors
  - {id: entrance-b, kind: entrance, points: [[43, 0], [47, 0]], in_side: left}  # east doors
  - {id: exit, kind: exit, points: [[22, 0], [28, 0]], in_side: left}  # through the gates
  # Across the pavement outside, to count passers-by; +1 = walking east (left of a→b, b is
  # south of a). Passby lines may lie outside the floor.
  - {id: pavement, kind: passby, points: [[15, -1], [15, -6]], in_side: left}
"""

CAMERAS = """
# Cameras: 64 overhead cameras on an 8 x 8 ceiling grid at 4.5 m, 640x480 at 10 fps, each
# showing about 7.4 m x 5.5 m of floor. `detect` is how often the adapters look: every frame
# (fps 10) where a camera sees a door or the exit gates, one frame every 4 s elsewhere,
# enough to place people for occupancy and the heatmap. Calibration: 5 floor marks per
# camera (measured to 5 cm) and the pixel where each appears; aisle fits the image → floor
# homography from them and refuses points that disagree by more than 5 cm. `sees` lists the
# zones in view.
"""


if __name__ == "__main__":
    print(build(), end="")
