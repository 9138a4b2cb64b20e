"""Event logs in, integer arrays out: readers, filters, splits and statistics."""

from userlens.data.filters import EmptyDatasetError, compact, event_weights, k_core, min_value
from userlens.data.filters import repeats as repeat_policy
from userlens.data.interactions import (
    Dataset,
    Histories,
    IdIndex,
    Interactions,
    ItemCatalog,
    UserTable,
)
from userlens.data.readers import ColumnMap, DataFormatError, read
from userlens.data.splits import LeakageError, Split, leave_one_out, temporal, user_holdout

__all__ = [
    "ColumnMap", "DataFormatError", "Dataset", "EmptyDatasetError", "Histories", "IdIndex",
    "Interactions", "ItemCatalog", "LeakageError", "Split", "UserTable", "compact",
    "event_weights", "k_core", "leave_one_out", "min_value", "read", "repeat_policy",
    "temporal", "user_holdout",
]
