"""Model families. Importing this package registers every family's variants (no framework import)."""
from zoo.models.triplet import config as _triplet  # noqa: F401
