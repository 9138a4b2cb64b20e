"""Registry of public datasets: where they live officially, their licence, and local copies.

``fetch`` downloads from the official home through pooch (checksum verified, progress
reported) into a data home (default ``~/.cache/userlens``). A *mirror* folder laid out like
``shared/data`` (one folder per dataset) is used instead of the network when it holds the
dataset, so tests and demos never need a download.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_HOME = Path.home() / ".cache" / "userlens"

MIRROR_HINT = ("set USERLENS_DATA_MIRROR to a folder laid out like shared/data (one folder "
               "per dataset)")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    size: str
    licence: str
    homepage: str
    url: str | None
    checksum: str | None
    """``algorithm:hex`` of the download, as published by the dataset's home."""
    file: str
    """Path of the event file inside the unpacked download."""
    format: str
    mirror_file: str | None = None
    """Path inside a mirror folder (``shared/data`` layout), when it differs."""
    mirror_format: str | None = None
    metadata: str | None = None
    """Mirror folder with MovieLens ``movies.dat`` / ``users.dat`` describing these items and
    users (through ``id_maps`` when the ids differ)."""
    id_maps: tuple[str, str] | None = None
    """Mirror files of ``dataset_id original_id`` lines for the items and the users."""


REGISTRY: dict[str, DatasetInfo] = {
    info.name: info for info in [
        DatasetInfo(
            "ml-100k", "MovieLens 100K ratings with genres and demographics",
            "100,000 events / 943 users / 1,682 items",
            "GroupLens research licence (non-commercial, cite Harper & Konstan 2015)",
            "https://grouplens.org/datasets/movielens/100k/",
            "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
            "md5:0e33842e24a9c977be4e0107933c0723", "ml-100k/u.data", "movielens",
            mirror_file="ml-100k/ml-100k.inter", mirror_format="recbole"),
        DatasetInfo(
            "ml-1m", "MovieLens 1M ratings with genres and demographics",
            "1,000,209 events / 6,040 users / 3,706 items",
            "GroupLens research licence (non-commercial, cite Harper & Konstan 2015)",
            "https://grouplens.org/datasets/movielens/1m/",
            "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
            "md5:c4d9eecfca2ab87c1945afe126590906", "ml-1m/ratings.dat", "movielens",
            mirror_file="ml-1m/ml-1m_user_sequences.tsv.gz", mirror_format="sequences"),
        DatasetInfo(
            "ml-1m-sasrec", "MovieLens 1M exactly as SASRec published it (ml-1m.txt, user item "
            "lines; the file behind the published full-ranking numbers), with titles, genres and "
            "demographics through id maps",
            "999,611 events / 6,040 users / 3,416 items (items with >= 5 ratings)",
            "GroupLens research licence (non-commercial, cite Harper & Konstan 2015)",
            "https://github.com/kang205/SASRec", None, None, "ml-1m-sasrec/ml-1m.txt",
            "sequences", mirror_file="ml-1m-sasrec/ml-1m.txt", metadata="ml-1m",
            id_maps=("ml-1m-sasrec/sas_to_original_items.txt",
                     "ml-1m-sasrec/sas_to_original_users.txt")),
        DatasetInfo(
            "ml-latest-small", "MovieLens latest-small ratings and tags",
            "100,836 events / 610 users / 9,742 items",
            "GroupLens research licence (non-commercial)",
            "https://grouplens.org/datasets/movielens/latest/",
            "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
            None, "ml-latest-small/ratings.csv", "movielens"),
        DatasetInfo(
            "amazon-beauty-bert4rec", "Amazon Beauty as prepared by BERT4Rec (user item lines)",
            "353,962 events / 40,226 users / 54,542 items",
            "Amazon review data: research use (McAuley et al.)",
            "https://github.com/FeiSun/BERT4Rec", None, None, "beauty.txt", "sequences",
            mirror_file="amazon-beauty-bert4rec/beauty.txt"),
        DatasetInfo(
            "beauty-s3rec", "Amazon Beauty 5-core as prepared by S3-Rec",
            "198,502 events / 22,363 users / 12,101 items",
            "Amazon review data: research use (McAuley et al.)",
            "https://github.com/RUCAIBox/CIKM2020-S3Rec", None, None, "Beauty.txt", "sequences",
            mirror_file="s3rec/Beauty.txt"),
        DatasetInfo(
            "amazon-scientific-unisrec", "Amazon 2018 Industrial & Scientific in UniSRec's "
            "layout (a subset), with each item's title, categories and brand",
            "19,712 events / 2,928 users / 1,585 items (all with text)",
            "Amazon review data: research use (Ni, Li & McAuley 2019)",
            "https://github.com/RUCAIBox/UniSRec", None, None,
            "amazon-scientific-unisrec/Scientific.test.inter", "unisrec",
            mirror_file="amazon-scientific-unisrec/Scientific.test.inter"),
    ]
}


def find_mirror(start: Path | None = None) -> Path | None:
    """A ``shared/data`` folder beside the working directory or one of its parents (how
    this project's checkouts are laid out), or None."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "shared" / "data" / "README.md").is_file():
            return folder / "shared" / "data"
    return None


def resolve(name: str, *, mirror: Path | None = None,
            data_home: Path = DEFAULT_DATA_HOME) -> tuple[Path, str]:
    """Local path and format of a registered dataset: mirror first, then the data home."""
    if name not in REGISTRY:
        raise KeyError(f"unknown dataset '{name}'; known datasets: {', '.join(REGISTRY)}")
    info = REGISTRY[name]
    if mirror is not None and info.mirror_file and (mirror / info.mirror_file).exists():
        return mirror / info.mirror_file, info.mirror_format or info.format
    cached = data_home / info.file
    if cached.exists():
        return cached, info.format
    raise FileNotFoundError(f"dataset '{name}' is not available locally (looked in {data_home}"
                            + (f" and mirror {mirror}" if mirror else "") + "); run "
                            f"`userlens datasets fetch {name}`, or {MIRROR_HINT}")


class _Progress:
    """The progress-bar object pooch drives, forwarding to a ``(done, total)`` callback."""

    def __init__(self, callback: Callable[[int, int], None]) -> None:
        self.callback, self.total, self.done = callback, 0, 0

    def update(self, n: int) -> None:
        self.done += n
        self.callback(self.done, self.total)

    def reset(self) -> None:
        self.done = 0

    def close(self) -> None:
        pass


def fetch(name: str, *, data_home: Path = DEFAULT_DATA_HOME, mirror: Path | None = None,
          progress: Callable[[int, int], None] | None = None) -> Path:
    """Make a dataset available locally and return the path of its event file.

    Uses the mirror when it holds the dataset; otherwise pooch downloads it from the official
    URL, verifies the published checksum and unpacks it into ``data_home``. A failed download
    or checksum leaves nothing behind; the error names the URL.
    """
    import pooch

    try:
        return resolve(name, mirror=mirror, data_home=data_home)[0]
    except FileNotFoundError:
        pass
    info = REGISTRY[name]
    if info.url is None:
        raise FileNotFoundError(f"dataset '{name}' has no public download; get it from "
                                f"{info.homepage} and {MIRROR_HINT}")
    data_home.mkdir(parents=True, exist_ok=True)
    processor = pooch.Unzip(extract_dir=str(data_home.resolve())) \
        if info.url.endswith(".zip") else None
    # pooch logs each download through its own handler; progress reaches the caller through
    # ``progress``, and errors are raised below with the URL, so keep its logger quiet.
    pooch_logger = pooch.get_logger()
    level = pooch_logger.level
    pooch_logger.setLevel("ERROR")
    try:
        pooch.retrieve(info.url, known_hash=info.checksum, path=data_home / "downloads",
                       processor=processor,
                       progressbar=_Progress(progress) if progress else False)
    except ValueError as error:  # checksum mismatch: pooch has deleted the download
        raise ValueError(f"{info.url}: {error}; nothing was saved") from None
    except Exception as error:  # noqa: BLE001 (requests/OS errors: name the URL)
        raise OSError(f"{info.url}: download failed ({type(error).__name__}: {error})"
                      ) from None
    finally:
        pooch_logger.setLevel(level)
    target = data_home / info.file
    if not target.exists():
        raise FileNotFoundError(f"{info.url}: the download has no {info.file}")
    return target
