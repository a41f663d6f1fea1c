"""The frozen base of every configuration model (`params.yaml` sections and scenario sections).

It sits below `pmg.config` and `pmg.scenarios` so that both can build on it:
the scenario modules declare their own `prepare.<scenario>` section, and the
config assembles them, without either importing the other's internals.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A frozen config section that forbids unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")
