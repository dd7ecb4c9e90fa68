"""Moved to `jobgroup.state.layout` (the controller is not the floor the log readers and the
doctor stand on); kept for imports from before the move."""

from jobgroup.state.layout import *  # noqa: F401,F403
