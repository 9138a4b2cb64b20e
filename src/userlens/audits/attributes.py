"""Users' labelled personal attributes, read from a dataset's user table.

MovieLens codes are turned into the readable groups GroupLens documents (ML-1M's age code
25 is "25-34", occupation 12 "programmer"); ML-100K's exact ages are put into the same
groups, so reports on the two read alike.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from userlens.data.interactions import Dataset

ML1M_AGES = {"1": "under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49",
             "50": "50-55", "56": "56+"}
ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer"]
AGE_EDGES = [(18, "under 18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"),
             (56, "50-55")]


class MissingAttributeError(ValueError):
    """An audit needs a user attribute the data does not have."""


def _age_group(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    if value in ML1M_AGES:  # ML-1M stores the group's code
        return ML1M_AGES[value]
    try:
        age = float(value)
    except ValueError:
        return value
    return next((name for edge, name in AGE_EDGES if age < edge), "56+")


def _occupation(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    if value.isdigit() and int(value) < len(ML1M_OCCUPATIONS):
        return ML1M_OCCUPATIONS[int(value)]
    return value


def _gender(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    return {"f": "F", "female": "F", "m": "M", "male": "M"}.get(value.strip().lower(), value)


READABLE = {"age": _age_group, "occupation": _occupation, "gender": _gender}


def user_labels(dataset: Dataset, attribute: str) -> np.ndarray:
    """(n_users,) object array: each user's value of ``attribute`` (None when unknown), in
    internal user order.

    Raises:
        MissingAttributeError: the data has no user table, or no such column (the message
            names the attribute and the columns there are).
    """
    if dataset.user_table is None:
        raise MissingAttributeError(
            f"attribute '{attribute}': the data has no user attributes (give a user table, "
            "e.g. users.dat beside ML-1M or a RecBole .user file)")
    frame = dataset.user_table.frame
    if attribute not in frame.columns:
        known = [c for c in frame.columns if c != "user_id"]
        raise MissingAttributeError(f"attribute '{attribute}' is not in the user table; "
                                    f"its columns are {known}")
    raw = frame[attribute].cast(pl.Utf8).to_list()
    readable = READABLE.get(attribute, lambda v: v if v not in (None, "") else None)
    values = np.array([readable(v) for v in raw], dtype=object)
    if len(values) != dataset.interactions.n_users:
        raise ValueError(f"user table has {len(values)} rows for "
                         f"{dataset.interactions.n_users} users")
    return values
