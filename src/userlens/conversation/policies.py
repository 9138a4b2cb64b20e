"""Action: when to ask, what to ask, when to recommend.

- ``abs_greedy``: recommend the top list every turn (rejected items leave the candidates).
- ``max_entropy``: ask the attribute of highest weighted entropy over the candidates until the
  candidates fit in one list, then recommend.
- ``scpr`` (Lei et al., KDD 2020): a DQN decides only *whether* to ask or recommend, from the
  conversation history and the number of candidates; what to ask is the max-entropy attribute
  adjacent to the candidates (the path on the graph), what to recommend the top list.
- ``ear`` (Lei et al., WSDM 2020): a REINFORCE policy over every attribute plus "recommend",
  from the attributes' entropies and the estimator's preferences for them, the history and
  the candidates' count.

Learned policies train on simulated conversations over the training pairs and keep the
weights with the best SR@15 on a fixed sample of validation pairs; test pairs are played
once, at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from userlens.config import PolicyName, PolicyTraining
from userlens.conversation.session import Conversation, Conversations
from userlens.conversation.simulator import (
    Action,
    Ask,
    Recommend,
    UserSimulator,
    evaluate,
    run_episode,
)

LENGTH_BINS = np.array([10, 50, 100, 200, 500, 1000, 2000])

def _length_onehot(count: int) -> np.ndarray:
    onehot = np.zeros(len(LENGTH_BINS) + 1, dtype=np.float32)
    onehot[int(np.searchsorted(LENGTH_BINS, count, side="left"))] = 1.0
    return onehot


def _history(conversation: Conversation, max_turns: int) -> np.ndarray:
    history = np.zeros(max_turns, dtype=np.float32)
    outcomes = conversation.outcomes[:max_turns]
    history[:len(outcomes)] = outcomes
    return history


def scpr_state(conversations: Conversations, conversation: Conversation,
               max_turns: int) -> np.ndarray:
    return np.concatenate([_history(conversation, max_turns),
                           _length_onehot(int(conversation.candidates.sum()))])


class AbsGreedy:
    name = "abs_greedy"

    def __call__(self, conversations: Conversations, conversation: Conversation,
                 max_turns: int) -> Action:
        return Recommend(conversations.recommend(conversation)[0])


class MaxEntropy:
    name = "max_entropy"

    def __call__(self, conversations: Conversations, conversation: Conversation,
                 max_turns: int) -> Action:
        if conversation.candidates.sum() > conversations.list_size:
            question = conversations.best_question(conversation)
            if question is not None:
                return Ask(question)
        return Recommend(conversations.recommend(conversation)[0])


class LearnedPolicy:
    """Shared by SCPR and EAR: training loop with validation-based selection, save/load."""

    name = "learned"
    training: PolicyTraining

    def __init__(self, training: PolicyTraining, seed: int) -> None:
        self.training = training
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.learning = False
        self.history: list[dict] = []

    def fit(self, conversations: Conversations, simulator: UserSimulator,
            train_pairs: np.ndarray, valid_pairs: np.ndarray, *, max_turns: int = 15,
            on_progress: Callable[[dict], None] | None = None) -> LearnedPolicy:
        from userlens.models.nn.policy import torch_threads

        with torch_threads(1):
            return self._fit(conversations, simulator, train_pairs, valid_pairs,
                             max_turns=max_turns, on_progress=on_progress)

    def _fit(self, conversations, simulator, train_pairs, valid_pairs, *, max_turns,
             on_progress) -> LearnedPolicy:
        config = self.training
        rng = np.random.default_rng(self.seed)
        if len(valid_pairs) > config.valid_pairs:
            valid_pairs = valid_pairs[rng.choice(len(valid_pairs), config.valid_pairs,
                                                 replace=False)]
        best, best_sr = self.learner.weights(), -1.0
        if self.pretrain(conversations, simulator, train_pairs, max_turns=max_turns):
            best_sr = self._check(0, conversations, simulator, valid_pairs, max_turns,
                                  on_progress)
            best = self.learner.weights()
        for episode in range(1, config.episodes + 1):
            user, item = train_pairs[rng.integers(len(train_pairs))]
            self.learning = True
            played = run_episode(conversations, simulator, self, int(user), int(item),
                                 rng=rng, max_turns=max_turns,
                                 observe=lambda c, a, r, d: self.observe(conversations, c, a,
                                                                         r, d, max_turns))
            self.end_episode(played.rewards)
            self.learning = False
            if episode % config.eval_every == 0 or episode == config.episodes:
                sr = self._check(episode, conversations, simulator, valid_pairs, max_turns,
                                 on_progress)
                if sr > best_sr:
                    best, best_sr = self.learner.weights(), sr
        self.learner.load(best)
        return self

    def _check(self, episode: int, conversations, simulator, valid_pairs, max_turns,
               on_progress) -> float:
        """SR on the fixed validation sample, recorded in the history."""
        result = evaluate(conversations, simulator, self, valid_pairs, seed=self.seed + 1,
                          max_turns=max_turns)
        row = {"episode": episode, "valid_sr": result[f"sr@{max_turns}"],
               "valid_at": result["at"]}
        self.history.append(row)
        if on_progress is not None:
            on_progress(row)
        return row["valid_sr"]

    def pretrain(self, conversations, simulator, train_pairs, *, max_turns) -> bool:
        """Supervised start before reinforcement learning; True when it happened."""
        return False

    def observe(self, conversations, conversation, action, reward, done, max_turns) -> None:
        pass

    def end_episode(self, rewards: list[float]) -> None:
        pass

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"policy-{self.name}.npz", **self.learner.weights())
        (folder / f"policy-{self.name}.json").write_text(json.dumps(
            {"policy": self.name, "training": self.training.model_dump(),
             "history": self.history}))

    def load(self, folder: str | Path) -> LearnedPolicy:
        with np.load(Path(folder) / f"policy-{self.name}.npz", allow_pickle=False) as arrays:
            self.learner.load({k: arrays[k] for k in arrays.files})
        return self


class SCPR(LearnedPolicy):
    name = "scpr"
    ASK, RECOMMEND = 0, 1

    def __init__(self, max_turns: int = 15, training: PolicyTraining | None = None,
                 seed: int = 0) -> None:
        from userlens.models.nn.policy import DQN

        training = training or PolicyTraining()
        super().__init__(training, seed)
        in_dim = max_turns + len(LENGTH_BINS) + 1
        self.learner = DQN(in_dim, 2, hidden=training.hidden, lr=training.learning_rate,
                           gamma=training.gamma, seed=seed)
        self._pending: tuple[np.ndarray, int] | None = None

    def __call__(self, conversations: Conversations, conversation: Conversation,
                 max_turns: int) -> Action:
        state = scpr_state(conversations, conversation, max_turns)
        choice = self.learner.act(state, self.training.epsilon if self.learning else 0.0,
                                  self.rng)
        question = conversations.best_question(conversation) if choice == self.ASK else None
        if question is None:
            choice = self.RECOMMEND
        self._pending = (state, choice)
        if choice == self.ASK:
            return Ask(question)
        return Recommend(conversations.recommend(conversation)[0])

    def observe(self, conversations, conversation, action, reward, done, max_turns) -> None:
        if not self.learning or self._pending is None:
            return
        state, choice = self._pending
        self.learner.remember(state, choice, reward,
                              scpr_state(conversations, conversation, max_turns), done)
        self.learner.learn(self.rng)


class EAR(LearnedPolicy):
    name = "ear"

    def __init__(self, n_attributes: int, max_turns: int = 15,
                 training: PolicyTraining | None = None, seed: int = 0) -> None:
        from userlens.models.nn.policy import Reinforce

        training = training or PolicyTraining()
        super().__init__(training, seed)
        self.n_attributes = n_attributes
        in_dim = 2 * n_attributes + max_turns + len(LENGTH_BINS) + 1
        self.learner = Reinforce(in_dim, n_attributes + 1, hidden=training.hidden,
                                 lr=training.learning_rate, gamma=min(training.gamma, 0.7),
                                 seed=seed)

    def state(self, conversations: Conversations, conversation: Conversation,
              max_turns: int) -> tuple[np.ndarray, np.ndarray]:
        entropy = conversations.attribute_entropy(conversation)
        allowed = np.isfinite(entropy)
        preference = 1.0 / (1.0 + np.exp(-conversations.estimator.attribute_scores(
            conversation.user_vector, conversation.confirmed)))
        state = np.concatenate([np.where(allowed, entropy, 0.0), np.where(allowed, preference,
                                                                          0.0),
                                _history(conversation, max_turns),
                                _length_onehot(int(conversation.candidates.sum()))])
        return state.astype(np.float32), np.append(allowed, True)

    def __call__(self, conversations: Conversations, conversation: Conversation,
                 max_turns: int) -> Action:
        state, mask = self.state(conversations, conversation, max_turns)
        choice = self.learner.act(state, mask, self.rng, greedy=not self.learning)
        if choice < self.n_attributes:
            return Ask(choice)
        return Recommend(conversations.recommend(conversation)[0])

    def end_episode(self, rewards: list[float]) -> None:
        self.learner.finish_episode(rewards)

    def pretrain(self, conversations, simulator, train_pairs, *, max_turns) -> bool:
        """EAR's pre-training: imitate max-entropy's moves (ask its attribute, or
        recommend) on ``pretrain_episodes`` conversations over training pairs."""
        episodes = self.training.pretrain_episodes
        if not episodes:
            return False
        teacher, rng = MaxEntropy(), np.random.default_rng(self.seed + 2)
        states, masks, actions = [], [], []

        def teach(conversations, conversation, max_turns):
            state, mask = self.state(conversations, conversation, max_turns)
            action = teacher(conversations, conversation, max_turns)
            choice = action.attribute if isinstance(action, Ask) else self.n_attributes
            mask[choice] = True
            states.append(state)
            masks.append(mask)
            actions.append(choice)
            return action

        for _ in range(episodes):
            user, item = train_pairs[rng.integers(len(train_pairs))]
            run_episode(conversations, simulator, teach, int(user), int(item), rng=rng,
                        max_turns=max_turns)
        agreement = self.learner.imitate(np.stack(states), np.stack(masks), np.array(actions),
                                         epochs=self.training.pretrain_epochs, rng=rng)
        self.history.append({"pretrain_moves": len(actions), "agreement": agreement})
        return True


def make_policy(name: PolicyName, *, n_attributes: int, max_turns: int = 15,
                training: PolicyTraining | None = None, seed: int = 0):
    if name == "abs_greedy":
        return AbsGreedy()
    if name == "max_entropy":
        return MaxEntropy()
    if name == "scpr":
        return SCPR(max_turns, training, seed)
    if name == "ear":
        return EAR(n_attributes, max_turns, training, seed)
    raise KeyError(f"unknown policy '{name}'; known: abs_greedy, max_entropy, scpr, ear")
