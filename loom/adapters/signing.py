"""Deprecated path: ``loom.intake.signing`` holds this now; kept so old imports work."""

from loom.intake.signing import *  # noqa: F403
from loom.intake.signing import __all__ as __all__
