"""Model families. Importing this package registers every family's variants (no framework import)."""
from zoo.models.triplet import config as _triplet  # noqa: F401
from zoo.models.van import config as _van  # noqa: F401
from zoo.models.halonet import config as _halonet  # noqa: F401
