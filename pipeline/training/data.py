"""Training sources that a fresh machine has offline, and the pair sampler.

Sources (``--images`` items):

* a folder: every image below it. A photo directly in the folder is its own
  object; photos inside one subfolder are several photos of ONE object (they
  give extra positive pairs, and are never used as each other's negatives).
* ``each:DIR``: every image below DIR is its own object, subfolders or not
  (wallpaper and pattern collections sort unrelated photos into subfolders).
* ``skimage``: the photos bundled with scikit-image (`skimage.data`).
* ``procedural`` (or ``procedural:N``): N generated leaf-like textures
  (noise octaves, random strokes and ellipses), fresh ones every epoch.
* Debian's opencv-doc samples are a folder:
  ``/usr/share/doc/opencv-doc/examples/data`` (``apt-get install opencv-doc``);
  `DEBIAN_PHOTO_SPECS` lists the other Debian packages' photo folders that
  `make train` installs (`DEBIAN_PHOTO_PACKAGES`).
* GIMP patterns (``.pat``, small tileable textures) are read and tiled to
  `PATTERN_SIDE`; they never give sibling negatives (every region of a tiling
  shows the same texture).

Held-out split: a real photo whose name hashes to 0 mod 5 (`is_held_out`) is
never trained on; those photos feed calibration and `bench/make_discs.py`.
Procedural textures for calibration use keys training never draws.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from pipeline.features.embedding import centre_square
from pipeline.training import views

# The shipped encoder's record: its `training.data.photos` lists every real photo it was trained on.
SHIPPED_RECORD = Path(__file__).resolve().parent.parent / "data" / "models" / "teaprint-encoder.json"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pat")
OPENCV_DOC_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
# Real photos and textures from Debian packages (`make train` installs them):
# wallpaper photos (mate-backgrounds' nature set, lomiri-wallpapers and
# ukui-wallpapers at the top of /usr/share/backgrounds), paper and cork scans
# (mypaint-data-extras) and GIMP's texture patterns (gimp-data, gimp-data-extras).
DEBIAN_PHOTO_PACKAGES = ("opencv-doc", "mate-backgrounds", "lomiri-wallpapers", "ukui-wallpapers", "mypaint-data-extras",
                         "gimp-data", "gimp-data-extras")
DEBIAN_PHOTO_SPECS = (
    "each:/usr/share/backgrounds/mate/nature",
    "each:/usr/share/backgrounds/.",  # lomiri-wallpapers' photos lie at the top level; subfolders are other packages'
    "each:/usr/share/mypaint/backgrounds",
    "each:/usr/share/gimp/2.0/patterns",
)
PATTERN_SIDE = 256
# First element of a procedural key: 0 = training, 1 = calibration, 2 = benchmark.
TRAIN_KEY, CALIBRATION_KEY, BENCH_KEY = 0, 1, 2
MIN_SIDE = 96
MAX_SIDE = 512
# opencv-doc calibration shots: 26 near-identical photos of one chessboard.
_SKIP_NAMES = ("left0", "left1", "right0", "right1", "chessboard", "lfw_subset", "multipage")


@dataclass(frozen=True)
class Source:
    """One photo that objects are cut from.

    Attributes
    ----------
    name : str
        Stable identifier (origin:relative path).
    image : ndarray, shape (H, W, 3), dtype uint8, RGB
        At most `MAX_SIDE` pixels on its longer side.
    group : str
        Photos sharing a group show the same object.
    tiled : bool
        A repeated tile (GIMP pattern): two regions of it are not different objects.
    """

    name: str
    image: np.ndarray
    group: str
    tiled: bool = False


def family(name: str) -> str:
    """`name` without a trailing shot number / stereo side, so near-duplicate
    photos (aloeL/aloeR, graf1/graf3, rubberwhale1/2) fall on one side of the split."""
    stem = Path(name.split(":", 1)[-1]).with_suffix("").as_posix().lower()
    prev = None
    while prev != stem:
        prev = stem
        stem = re.sub(r"(_?\d+|_?(left|right|original|modified|bugy)|(?<=[a-z]{4})[lrab])$", "", stem)
    return f"{name.split(':', 1)[0]}:{stem}"


def is_held_out(name: str) -> bool:
    """True for the ~20 % of real photos reserved for calibration and benchmarks.

    Decided by the sha1 of `family(name)` modulo 5, so it is stable across
    machines and near-duplicates never straddle the split.
    """
    return int(hashlib.sha1(family(name).encode("utf-8")).hexdigest(), 16) % 5 == 0


def trained_photos(record: Path = SHIPPED_RECORD) -> frozenset[str]:
    """Names (``origin:relative path``) of the real photos an encoder was trained on.

    Read from its training record (the ``.json`` beside the ``.keras``,
    ``training.data.photos``), so benchmark generators can exclude them
    explicitly rather than trusting that `is_held_out` was applied.

    Raises
    ------
    ValueError
        When the record lists no training photos (an encoder trained before
        records kept them cannot vouch for any benchmark).
    """
    photos = json.loads(Path(record).read_text(encoding="utf-8")).get("training", {}).get("data", {}).get("photos")
    if not photos:
        raise ValueError(f"{record}: no training.data.photos, cannot tell which photos the encoder trained on")
    return frozenset(photos)


def without_trained(sources: Iterable[Source], trained: frozenset[str]) -> list[Source]:
    """`sources` less every photo in `trained` and every near-duplicate of one (same `family`)."""
    families = {family(name) for name in trained}
    return [s for s in sources if s.name not in trained and family(s.name) not in families]


def _fit(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.shape[2] == 4:
        image = image[..., :3]
    if image.dtype != np.uint8:
        image = cv2.normalize(image.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    h, w = image.shape[:2]
    if max(h, w) > MAX_SIDE:
        f = MAX_SIDE / max(h, w)
        image = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def read_gimp_pattern(path: Path) -> np.ndarray | None:
    """Decode a GIMP pattern (``.pat``) as RGB uint8, tiled to at least `PATTERN_SIDE` a side.

    The format is a big-endian header (header size, version, width, height,
    bytes per pixel, magic ``GPAT``, name) followed by raw pixels. None if the
    file is not such a pattern.
    """
    raw = Path(path).read_bytes()
    if len(raw) < 24 or raw[20:24] != b"GPAT":
        return None
    header, _, w, h, depth = (int.from_bytes(raw[i : i + 4], "big") for i in range(0, 20, 4))
    if depth not in (1, 2, 3, 4) or w < 1 or h < 1 or len(raw) < header + w * h * depth:
        return None
    px = np.frombuffer(raw[header : header + w * h * depth], np.uint8).reshape(h, w, depth)
    px = px[..., :1] if depth <= 2 else px[..., :3]  # drop alpha
    reps = (-(-PATTERN_SIDE // h), -(-PATTERN_SIDE // w), 1)
    return np.ascontiguousarray(np.tile(np.repeat(px, 3, axis=2) if px.shape[2] == 1 else px, reps))


def read_image(path: Path) -> np.ndarray | None:
    """Decode `path` as RGB uint8 (H, W, 3), shrunk to MAX_SIDE; None if unreadable."""
    if Path(path).suffix.lower() == ".pat":
        pattern = read_gimp_pattern(path)
        return None if pattern is None else _fit(pattern)
    data = np.fromfile(str(path), dtype=np.uint8)
    im = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if im is None:
        return None
    return _fit(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))


def _usable(name: str, image: np.ndarray | None) -> bool:
    if image is None or min(image.shape[:2]) < MIN_SIDE:
        return False
    if any(s in Path(name).name.lower() for s in _SKIP_NAMES):
        return False
    return float(image.std()) > 8.0  # blank or near-blank images teach nothing


def folder_sources(folder: Path, each: bool = False, recursive: bool = True) -> list[Source]:
    """Every readable image below `folder` (sorted).

    Parameters
    ----------
    folder : Path
    each : bool
        Every photo is its own object, whatever subfolder it is in.
    recursive : bool
        Also read subfolders.

    Returns
    -------
    list of Source
        Group = the photo itself with `each`, else the subfolder for photos in one.
        Symbolic links are skipped.
    """
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    out = []
    # A link is another name for a photo (lomiri-wallpapers links its default background): never a second object.
    for path in sorted(p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.is_symlink()):
        rel = path.relative_to(folder)
        name = f"{folder.name}:{rel.as_posix()}"
        image = read_image(path)
        if not _usable(name, image):
            continue
        group = f"{folder.name}:{rel.parent.as_posix()}" if len(rel.parts) > 1 and not each else name
        out.append(Source(name, image, group, tiled=path.suffix.lower() == ".pat"))  # type: ignore[arg-type]
    return out


def skimage_sources() -> list[Source]:
    """The photos bundled with scikit-image (no download needed), sorted by name."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    out = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        name = f"skimage:{path.name}"
        image = read_image(path)
        if _usable(name, image):
            out.append(Source(name, image, name))  # type: ignore[arg-type]
    return out


# ------------------------------------------------------- procedural textures


def _noise_octaves(rng: np.random.Generator, size: int, octaves: int, persistence: float) -> np.ndarray:
    field = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    cells = int(rng.integers(2, 6))
    for _ in range(octaves):
        small = rng.normal(0, 1, size=(cells, cells)).astype(np.float32)
        field += amp * cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= persistence
        cells *= 2
        if cells > size:
            break
    return field / total


def procedural_texture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A random leaf-like texture: noise octaves plus strokes and ellipses.

    Parameters
    ----------
    rng : numpy.random.Generator
    size : int

    Returns
    -------
    ndarray, shape (size, size, 3), dtype uint8, RGB (brownish tints)
    """
    base = _noise_octaves(rng, size, octaves=int(rng.integers(3, 7)), persistence=float(rng.uniform(0.4, 0.8)))
    img = (base - base.min()) / max(1e-6, float(base.max() - base.min()))
    img = (0.2 + 0.6 * img).astype(np.float32)
    kind = int(rng.integers(0, 4))
    if kind > 0:  # leaves: many elongated ellipses / strokes
        n = int(rng.integers(60, 500))
        main_dir = float(rng.uniform(0, 180))
        spread = float(rng.choice([15.0, 45.0, 180.0]))
        length = float(rng.uniform(4, 30))
        canvas = img.copy()
        for _ in range(n):
            x, y = rng.uniform(-10, size + 10, size=2)
            a = max(2.0, length * float(rng.uniform(0.5, 1.5)))
            b = max(1.0, a * float(rng.uniform(0.08, 0.5)))
            ang = main_dir + float(rng.uniform(-spread, spread))
            val = float(rng.uniform(0.0, 1.0))
            if kind == 2:
                cv2.ellipse(canvas, (int(x), int(y)), (int(a), int(b)), ang, 0, 360, val, -1, cv2.LINE_AA)
            else:
                dx, dy = a * np.cos(np.radians(ang)), a * np.sin(np.radians(ang))
                cv2.line(canvas, (int(x - dx), int(y - dy)), (int(x + dx), int(y + dy)), val, max(1, int(b)), cv2.LINE_AA)
        w = float(rng.uniform(0.5, 1.0))
        img = w * canvas + (1 - w) * img
    if rng.uniform() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.5)))
    img = img + rng.normal(0, float(rng.uniform(0.0, 0.05)), size=img.shape).astype(np.float32)
    tint = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.3, 0.3, size=3) * np.array([0.6, 0.3, 0.0])
    rgb = np.clip(img[..., None] * tint[None, None, :] * 255.0, 0, 255).astype(np.uint8)
    return rgb


def procedural_sources(key: Sequence[int], count: int, size: int = 256) -> list[Source]:
    """`count` procedural textures; texture i uses ``default_rng([*key, i])``.

    Training draws keys ``(0, seed, epoch)``; calibration and benchmarks draw
    keys starting with 1 or more, so they never see a training texture.
    """
    out = []
    for i in range(count):
        rng = np.random.default_rng([*key, i])
        name = "procedural:" + ":".join(map(str, (*key, i)))
        out.append(Source(name, procedural_texture(rng, size), name))
    return out


# ----------------------------------------------------------- source specs


@dataclass(frozen=True)
class SourceSet:
    """Resolved ``--images`` items: fixed photos plus a procedural count per epoch."""

    photos: list[Source]
    procedural_per_epoch: int
    specs: list[str]


def resolve_sources(items: Sequence[str], split: str = "train") -> SourceSet:
    """Turn ``--images`` items into sources.

    Parameters
    ----------
    items : sequence of str
        Folders, ``each:FOLDER`` (every photo its own object; a trailing
        ``/.`` reads FOLDER alone, not its subfolders), ``skimage``,
        ``procedural`` or ``procedural:N``.
    split : {"train", "held_out", "all"}
        Which side of `is_held_out` to keep.

    Returns
    -------
    SourceSet

    Raises
    ------
    ValueError
        For a folder that does not exist or an unknown keyword.
    """
    photos: list[Source] = []
    procedural = 0
    for item in items:
        if item == "skimage":
            photos.extend(skimage_sources())
        elif item == "procedural" or item.startswith("procedural:"):
            procedural += int(item.split(":", 1)[1]) if ":" in item else 256
        else:
            each = item.startswith("each:")
            text = item[len("each:") :] if each else item
            recursive = not (text.endswith("/.") and each)
            folder = Path(text)
            if not folder.is_dir():
                raise ValueError(f"--images {item}: not a folder (nor 'each:DIR' / 'skimage' / 'procedural[:N]')")
            photos.extend(folder_sources(folder, each=each, recursive=recursive))
    if split != "all":
        keep = split == "held_out"
        photos = [s for s in photos if is_held_out(s.name) == keep]
    return SourceSet(photos, procedural, list(items))


# ---------------------------------------------------------------- objects


@dataclass(frozen=True)
class ObjectSpec:
    """One physical object: a region of one source, bare texture or a disc.

    A `hard` object is a disc whose two views are a careful registration shot
    and a hard re-shot (`hard_view`), the pair a hard query makes with its
    catalog photo.
    """

    source: int
    centre: tuple[float, float]
    side: float
    disc: bool
    hard: bool = False


def texture_energy(region: np.ndarray) -> float:
    """Fine-detail contrast of `region` (H, W[, 3]) uint8: std of the band-pass at 48 px.

    Blank sky, flat logos and smooth gradients score below ~4; leaf textures
    score 10 or more. Such regions are not identifiable objects (every shot
    of every blank region looks alike) and are skipped as objects.
    """
    grey = region if region.ndim == 2 else cv2.cvtColor(region, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (48, 48), interpolation=cv2.INTER_AREA).astype(np.float32)
    return float(np.std(small - cv2.GaussianBlur(small, (0, 0), 3.0)))


MIN_TEXTURE = 5.0


def _region_energy(image: np.ndarray, centre: tuple[float, float], side: float) -> float:
    x0, y0 = int(centre[0] - side / 2), int(centre[1] - side / 2)
    return texture_energy(image[max(0, y0) : y0 + int(side), max(0, x0) : x0 + int(side)])


def sample_object(
    rng: np.random.Generator, image: np.ndarray, source: int, disc_prob: float, tries: int = 12, hard_prob: float = 0.0
) -> ObjectSpec:
    """Draw a square region (side 40-100 % of the shorter side) of `image` as an object.

    Up to `tries` regions are drawn; the first with `texture_energy` >= MIN_TEXTURE
    is kept, else the most textured one. With probability `hard_prob` the
    object is a hard disc (no random draw is made when it is 0, so recipes
    without hard shots keep their random stream).
    """
    h, w = image.shape[:2]
    best: tuple[float, ObjectSpec] | None = None
    for _ in range(tries):
        side = float(min(h, w)) * float(rng.uniform(0.4, 1.0))
        cx = float(rng.uniform(side / 2, w - side / 2))
        cy = float(rng.uniform(side / 2, h - side / 2))
        hard = bool(hard_prob > 0 and rng.uniform() < hard_prob)
        obj = ObjectSpec(source, (cx, cy), side, hard or bool(rng.uniform() < disc_prob), hard)
        energy = _region_energy(image, (cx, cy), side)
        if energy >= MIN_TEXTURE:
            return obj
        if best is None or energy > best[0]:
            best = (energy, obj)
    assert best is not None
    return best[1]


def sample_siblings(rng: np.random.Generator, image: np.ndarray, source: int, hard_prob: float, count: int = 2) -> list[ObjectSpec] | None:
    """`count` disjoint disc objects of one photo: "sibling cakes" (same tea, other leaves).

    The photo's longer side is cut into `count` equal cells and one square
    (60-100 % of the cell's shorter side) is drawn inside each, so the objects
    never overlap. None when a cell is too small (< 48 px) or blank
    (`texture_energy` < MIN_TEXTURE): two blank regions cannot be told apart.
    """
    h, w = image.shape[:2]
    long_side, short = max(h, w), min(h, w)
    cell = long_side / count
    limit = min(cell, short)
    if limit < 48:
        return None
    out = []
    for k in range(count):
        side = limit * float(rng.uniform(0.6, 1.0))
        along = k * cell + float(rng.uniform(side / 2, cell - side / 2))
        across = float(rng.uniform(side / 2, short - side / 2))
        centre = (along, across) if w >= h else (across, along)
        hard = bool(hard_prob > 0 and rng.uniform() < hard_prob)
        out.append(ObjectSpec(source, centre, side, True, hard))
    if any(_region_energy(image, o.centre, o.side) < MIN_TEXTURE for o in out):
        return None
    return out


def registration_view(image: np.ndarray, obj: ObjectSpec, rng: np.random.Generator, out_size: int) -> np.ndarray:
    """A careful catalog photo of disc `obj`: near overhead, even framing, JPEG 90-95 (as bench/make_discs.py)."""
    return views.disc_photo(image, rng, obj.centre, obj.side / 2.0, out_size=out_size, fill=float(rng.uniform(0.8, 0.9)),
                            max_tilt=8.0, scale_range=(0.95, 1.05), quality_range=(90, 95))


def hard_view(image: np.ndarray, obj: ObjectSpec, rng: np.random.Generator, out_size: int) -> np.ndarray:
    """A hard re-shot of disc `obj` as the encoder sees it: `views.hard_disc_photo` then the centre square.

    The photo is a 4:3 frame (portrait or landscape) whose shorter side is
    1-1.2 x `out_size`, so its noise, blur and JPEG act at about the
    encoder's resolution (harsher than on a 640 px query, which the encoder
    sees reduced 5-10 x; rendering it that large costs 30x more); the centre
    square is what `prepare_input` keeps.

    Returns
    -------
    ndarray, shape (out_size, out_size, 3), dtype uint8
    """
    short = int(round(out_size * float(rng.uniform(1.0, 1.2))))
    wh = (short * 4 // 3, short)
    if rng.uniform() < 0.5:
        wh = (wh[1], wh[0])
    photo = views.hard_disc_photo(image, rng, obj.centre, obj.side / 2.0, wh, fill=float(rng.uniform(0.75, 0.95)))
    return cv2.resize(centre_square(photo), (out_size, out_size), interpolation=cv2.INTER_AREA)


def render_view(
    image: np.ndarray,
    obj: ObjectSpec,
    rng: np.random.Generator,
    out_size: int,
    scale_range: tuple[float, float] = (0.6, 1.7),
) -> np.ndarray:
    """One photo of `obj`: a disc on a table, or the bare surface filling the frame.

    Returns
    -------
    ndarray, shape (out_size, out_size, 3), dtype uint8
    """
    if obj.disc:
        return views.disc_photo(
            image, rng, obj.centre, obj.side / 2.0, out_size=out_size, fill=float(rng.uniform(0.8, 0.98)),
            scale_range=(0.9, 1.1),
        )
    return views.rephotograph(image, rng, out_size=out_size, src_centre=obj.centre, src_side=obj.side, scale_range=scale_range)


def make_pair_bank(
    sources: Sequence[Source],
    rng: np.random.Generator,
    n_objects: int,
    out_size: int,
    disc_prob: float = 0.3,
    group_pair_prob: float = 0.5,
    hard_prob: float = 0.0,
    sibling_prob: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two views each of `n_objects` objects, for one epoch (or one batch).

    Objects are drawn in rounds over a random permutation of the groups, so
    within a block of ``len(groups)`` consecutive objects no two share a group
    (a batch smaller than that has only true negatives). For a group with
    several photos, with probability `group_pair_prob` the two views are two
    different photos of the group (whole frame). With probability
    `hard_prob` an object is a hard disc (registration shot + hard re-shot).
    With probability `sibling_prob` a single-photo, untiled source gives two
    disjoint discs (`sample_siblings`) as two objects with their own group
    ids (negative numbers): hard negatives of the same tea.

    Returns
    -------
    a, b : ndarray, shape (n_objects, out_size, out_size, 3), dtype uint8
        View pairs; a[i] and b[i] show the same object.
    groups : ndarray, shape (n_objects,), dtype int64
        Group index of each object (siblings: -1 - their index).
    """
    group_names = sorted({s.group for s in sources})
    gidx = {g: i for i, g in enumerate(group_names)}
    members: list[list[int]] = [[] for _ in group_names]
    for i, s in enumerate(sources):
        members[gidx[s.group]].append(i)
    a = np.empty((n_objects, out_size, out_size, 3), np.uint8)
    b = np.empty_like(a)
    groups = np.empty(n_objects, np.int64)
    order: list[int] = []
    k = 0
    while k < n_objects:
        if not order:
            order = list(rng.permutation(len(group_names)))
        g = int(order.pop())
        groups[k] = g
        mem = members[g]
        if len(mem) > 1 and rng.uniform() < group_pair_prob:
            i, j = rng.choice(len(mem), size=2, replace=False)
            si, sj = sources[mem[i]].image, sources[mem[j]].image
            a[k] = views.rephotograph(si, rng, out_size=out_size, scale_range=(0.9, 1.2))
            b[k] = views.rephotograph(sj, rng, out_size=out_size, scale_range=(0.9, 1.2))
            k += 1
            continue
        s = int(mem[int(rng.integers(len(mem)))])
        image = sources[s].image
        siblings = None
        if sibling_prob > 0 and len(mem) == 1 and not sources[s].tiled and k + 1 < n_objects and rng.uniform() < sibling_prob:
            siblings = sample_siblings(rng, image, s, hard_prob)
        objs = siblings or [sample_object(rng, image, s, disc_prob, hard_prob=hard_prob)]
        for n, obj in enumerate(objs):
            if n:
                groups[k] = -1 - k
            a[k], b[k] = render_pair(image, obj, rng, out_size)
            k += 1
    return a, b, groups


def render_pair(image: np.ndarray, obj: ObjectSpec, rng: np.random.Generator, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The two training views of `obj`: registration + hard re-shot for a hard object, else two shots."""
    if obj.hard:
        return registration_view(image, obj, rng, out_size), hard_view(image, obj, rng, out_size)
    return render_view(image, obj, rng, out_size), render_view(image, obj, rng, out_size)


def iter_names(sources: Iterable[Source]) -> list[str]:
    """Names of `sources`, for the metadata's data list."""
    return [s.name for s in sources]
