"""Profile summaries written by a language model, checked before anyone sees them.

The model gets the profile's strongest facts as a short list and is asked for two sentences
using only them. :class:`~userlens.profiles.summary.FaithfulnessChecker` then looks for any
catalogue value, item title or number the text names that the profile does not contain; an
unfaithful text is replaced by the template (and counted by the caller), never shown.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from userlens.llm import ChatClient
from userlens.profiles.population import Population
from userlens.profiles.summary import Check, FaithfulnessChecker, ProfileFacts, _short_title
from userlens.profiles.types import Profile, Summary

logger = logging.getLogger(__name__)

def prompt(profile: Profile, item_noun: str = "item") -> list[dict[str, str]]:
    """Chat messages asking for a summary of the profile's strongest facts.

    One user message, no system prompt: the embedded 135M model echoes system prompts back
    and followed this form best in our trials (docs/profiles.md).
    """
    facts = []
    for n, interest in enumerate(profile.interests[:3]):
        of = f" of their {item_noun}s" if n == 0 else ""
        facts.append(f"- likes {interest.value}: {interest.share:.0%}{of}")
    b = profile.behaviour
    if b.popularity_percentile.value is not None:
        pct = b.popularity_percentile.value
        facts.append("- prefers " + (f"popular {item_noun}s" if pct >= 75 else
                                     f"less-known {item_noun}s" if pct < 50 else
                                     f"a mix of popular and less-known {item_noun}s"))
    if b.events.value:
        facts.append(f"- {int(b.events.value)} {item_noun}s so far")
    for cluster in profile.clusters[:2]:
        if cluster.titles:
            facts.append(f"- for example {_short_title(cluster.titles[0])}")
    return [{"role": "user", "content": f"Facts about a {item_noun} fan:\n" + "\n".join(facts)
             + "\nDescribe this fan in two sentences, using only these facts."}]


@dataclass
class Written:
    """One LLM summary attempt: what is shown, the checker's verdict, the time it took."""

    summary: Summary
    check: Check
    draft: str
    seconds: float
    attempts: int = 1
    """Drafts asked for (the last one is ``draft``)."""

    @property
    def rejected(self) -> bool:
        return not self.check.faithful


def summarise(profile: Profile, population: Population, client: ChatClient, *,
              checker: FaithfulnessChecker | None = None, item_noun: str = "item",
              attempts: int = 2) -> Written:
    """Ask the model for a summary and check it; up to ``attempts`` drafts (different
    sampling seeds), and the template when none is faithful.

    A draft is rejected when it names a value, title or number the profile lacks, or names
    none of the profile's top three interests (it then says nothing checkable about them).
    """
    checker = checker or FaithfulnessChecker(population)
    facts = ProfileFacts.of(profile.interests, profile.clusters, profile.behaviour,
                            profile.controls, population)
    started = time.perf_counter()
    draft, verdict = "", Check(["no attempt"])
    for seed in range(attempts):
        draft = client.complete(prompt(profile, item_noun), seed=seed)
        verdict = checker.check(draft, facts) if draft else Check(["empty reply"])
        if verdict.faithful and profile.interests and not mentions_interest(draft, profile):
            verdict = Check(["names none of the top interests"])
        if verdict.faithful:
            return Written(Summary(text=draft, source="llm", model=client.model), verdict,
                           draft, time.perf_counter() - started, seed + 1)
        logger.info("LLM summary rejected (%s): %r", ", ".join(verdict.unsupported), draft)
    return Written(profile.summary, verdict, draft, time.perf_counter() - started, attempts)


def mentions_interest(text: str, profile: Profile) -> bool:
    lowered = text.lower()
    return any(i.value.lower() in lowered for i in profile.interests[:3])
