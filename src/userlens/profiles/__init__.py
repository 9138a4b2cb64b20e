"""Readable user profiles: interests, interest clusters, behaviour and a summary, each fact
with its evidence, plus the user's steering controls and explanations of recommendations.

In a notebook::

    from userlens import profiles
    population = profiles.Population.from_events(events_df, catalog_df)
    profile = profiles.build(events_df.filter(pl.col("user_id") == "42"), population)
"""

from userlens.profiles.build import build, events_of
from userlens.profiles.controls import Controls, ControlsPatch
from userlens.profiles.population import Population, cooccurrence_vectors
from userlens.profiles.summary import FaithfulnessChecker, ProfileFacts, template
from userlens.profiles.types import (
    Behaviour,
    Cluster,
    ControlsOut,
    Interest,
    Measure,
    Profile,
    Summary,
)

__all__ = ["Behaviour", "Cluster", "Controls", "ControlsOut", "ControlsPatch",
           "FaithfulnessChecker", "Interest", "Measure", "Population", "Profile",
           "ProfileFacts", "Summary", "build", "cooccurrence_vectors", "events_of", "template"]
