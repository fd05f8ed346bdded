"""Deprecated path: ``loom.intake.cloudevents`` holds this now; kept so old imports work."""

from loom.intake.cloudevents import *  # noqa: F403
from loom.intake.cloudevents import __all__ as __all__
