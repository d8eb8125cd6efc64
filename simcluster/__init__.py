"""simcluster: an agent-based discrete-event simulator of GPU clusters training large models."""

from simcluster.core.errors import OutOfMemoryError, ScenarioError

__version__ = "0.1.0"
__all__ = ["ScenarioError", "OutOfMemoryError", "__version__"]
