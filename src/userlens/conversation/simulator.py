"""The user simulator of EAR / SCPR and the episode loop every policy is measured with.

One episode per held-out (user, item) pair: the user wants that item. They open by naming one
attribute of it (chosen at random, seeded), answer "yes" to a question exactly when the
asked attribute is one of the item's, and accept a recommended list exactly when it contains
the item. An episode ends on acceptance or after ``max_turns`` turns (15 in the papers); a
turn is one question or one list. Success rate at t (SR@t) is the share of episodes accepted
by turn t; average turns (AT) counts a failed episode as ``max_turns``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from userlens.conversation.data import CRSData
from userlens.conversation.session import Conversation, Conversations

# SCPR's rewards
REWARDS = {"rec_success": 1.0, "rec_fail": -0.1, "ask_success": 0.01, "ask_fail": -0.1,
           "quit": -0.3}


@dataclass(frozen=True)
class Ask:
    attribute: int


@dataclass(frozen=True)
class Recommend:
    items: np.ndarray


Action = Ask | Recommend


class UserSimulator:
    """Answers from the target item's attributes (see the module docstring).

    ``history_from``: the splits whose pairs make up what each user already has when a
    conversation starts (for example ``("train",)`` while policies learn and are selected,
    ``("train", "valid")`` for the test pairs); the episode's own target is never part of
    it (in the published splits a pair is in one split only, so this only matters for the
    training pairs the policies learn from, each held out of its user's history as the
    test pairs are held out of theirs).
    """

    def __init__(self, data: CRSData, history_from: tuple[str, ...] = ()) -> None:
        self.data = data
        self.histories: list[np.ndarray] = [np.zeros(0, np.int64)] * data.n_users
        if history_from:
            pairs = np.concatenate([data.pairs[name] for name in history_from])
            pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
            bounds = np.searchsorted(pairs[:, 0], np.arange(data.n_users + 1))
            self.histories = [pairs[bounds[u]:bounds[u + 1], 1].astype(np.int64)
                              for u in range(data.n_users)]

    def history(self, user: int, item: int) -> list[int]:
        """What the user already has, the target left out."""
        own = self.histories[user] if 0 <= user < len(self.histories) else ()
        return [int(i) for i in own if i != item]

    def opening(self, item: int, rng: np.random.Generator) -> int | None:
        own = self.data.attributes_of(item)
        return int(own[rng.integers(len(own))]) if len(own) else None

    def answer(self, item: int, attribute: int) -> bool:
        return bool(np.isin(attribute, self.data.attributes_of(item)))

    def accepts(self, item: int, items: np.ndarray) -> bool:
        return bool(np.isin(item, items))


@dataclass
class Episode:
    user: int
    item: int
    success_turn: int | None
    turns: int
    asked: int
    rewards: list[float] = field(default_factory=list)


def run_episode(conversations: Conversations, simulator: UserSimulator,
                policy: Callable[[Conversations, Conversation, int], Action],
                user: int, item: int, *, rng: np.random.Generator, max_turns: int = 15,
                observe: Callable[[Conversation, Action, float, bool], None] | None = None
                ) -> Episode:
    """Play one conversation; ``observe(conversation, action, reward, done)`` after each
    turn (the learning policies record their transitions with it)."""
    conversation = conversations.start(user, simulator.history(user, item),
                                       attribute=simulator.opening(item, rng))
    rewards, asked = [], 0
    for turn in range(1, max_turns + 1):
        action = policy(conversations, conversation, max_turns)
        if isinstance(action, Ask):
            asked += 1
            yes = simulator.answer(item, action.attribute)
            conversations.answer(conversation, action.attribute, yes)
            reward = REWARDS["ask_success" if yes else "ask_fail"]
            done = False
        elif simulator.accepts(item, action.items):
            conversations.accept(conversation)
            reward, done = REWARDS["rec_success"], True
        else:
            conversations.reject(conversation, action.items)
            reward, done = REWARDS["rec_fail"], False
        if not done and turn == max_turns:
            reward, done = reward + REWARDS["quit"], True
        rewards.append(reward)
        if observe is not None:
            observe(conversation, action, reward, done)
        if done:
            success = turn if reward > 0 and isinstance(action, Recommend) else None
            return Episode(user, item, success, turn, asked, rewards)
    return Episode(user, item, None, max_turns, asked, rewards)


def summarise(episodes: list[Episode], *, max_turns: int = 15) -> dict:
    """SR@5, SR@10, SR@max_turns, AT, the success curve by turn and the share of questions."""
    turns = np.array([e.success_turn or 0 for e in episodes])
    success = turns > 0
    curve = [float(((turns > 0) & (turns <= t)).mean()) for t in range(1, max_turns + 1)]
    at = np.where(success, turns, max_turns).astype(float)
    n = len(episodes)
    sr = float(success.mean()) if n else 0.0
    return {"sr@5": curve[4] if max_turns >= 5 else None,
            "sr@10": curve[9] if max_turns >= 10 else None,
            f"sr@{max_turns}": sr, "at": float(at.mean()) if n else None,
            "episodes": n, "ci95_sr": 1.96 * float(np.sqrt(sr * (1 - sr) / max(n, 1))),
            "questions_per_episode": float(np.mean([e.asked for e in episodes])) if n else 0.0,
            "curve": curve}


def evaluate(conversations: Conversations, simulator: UserSimulator, policy,
             pairs: np.ndarray, *, seed: int = 0, max_turns: int = 15,
             on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Every pair once, each episode seeded by (seed, its position): reproducible."""
    episodes = []
    for index, (user, item) in enumerate(pairs):
        rng = np.random.default_rng([seed, index])
        episodes.append(run_episode(conversations, simulator, policy, int(user), int(item),
                                    rng=rng, max_turns=max_turns))
        if on_progress is not None and (index + 1) % 500 == 0:
            on_progress(index + 1, len(pairs))
    return summarise(episodes, max_turns=max_turns)
