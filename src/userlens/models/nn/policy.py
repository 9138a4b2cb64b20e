"""Dialogue-policy learners: DQN (SCPR's ask-or-recommend decision) and REINFORCE (EAR's
policy over questions and recommending), on plain state vectors.

The conversation layer builds the states and rewards; these classes only hold the network,
pick actions and take gradient steps. Weights come out and go back in as numpy arrays
(saved in an ``.npz``, never pickled).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads (the policies' tiny networks are fastest on one: on 2
    cores SCPR's training took 43 s on one thread, 247 s on two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, out_dim))


def _weights(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _load(module: nn.Module, weights: dict[str, np.ndarray]) -> None:
    module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})


class DQN:
    """Double DQN with experience replay and a periodically synced target network."""

    def __init__(self, in_dim: int, n_actions: int, *, hidden: int = 64, lr: float = 1e-3,
                 gamma: float = 0.999, memory: int = 50_000, batch_size: int = 64,
                 sync_every: int = 200, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.net = mlp(in_dim, hidden, n_actions)
        self.target = mlp(in_dim, hidden, n_actions)
        self.target.load_state_dict(self.net.state_dict())
        self.optimiser = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.memory: deque = deque(maxlen=memory)
        self.gamma, self.batch_size, self.sync_every = gamma, batch_size, sync_every
        self.n_actions, self.steps = n_actions, 0

    def values(self, state: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.net(torch.as_tensor(state, dtype=torch.float32)[None])[0].numpy()

    def act(self, state: np.ndarray, epsilon: float, rng: np.random.Generator) -> int:
        if rng.random() < epsilon:
            return int(rng.integers(self.n_actions))
        return int(np.argmax(self.values(state)))

    def remember(self, state, action: int, reward: float, next_state, done: bool) -> None:
        self.memory.append((np.asarray(state, np.float32), action, reward,
                            np.asarray(next_state, np.float32), float(done)))

    def learn(self, rng: np.random.Generator) -> float | None:
        if len(self.memory) < self.batch_size:
            return None
        rows = [self.memory[i] for i in rng.integers(len(self.memory), size=self.batch_size)]
        state, action, reward, next_state, done = (torch.as_tensor(np.array(c)) for c in
                                                   zip(*rows, strict=True))
        q = self.net(state).gather(1, action.long()[:, None])[:, 0]
        with torch.no_grad():
            best = self.net(next_state).argmax(1, keepdim=True)
            target = reward.float() + self.gamma * (1 - done.float()) * \
                self.target(next_state).gather(1, best)[:, 0]
        loss = nn.functional.smooth_l1_loss(q, target)
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        self.steps += 1
        if self.steps % self.sync_every == 0:
            self.target.load_state_dict(self.net.state_dict())
        return float(loss.detach())

    def weights(self) -> dict[str, np.ndarray]:
        return _weights(self.net)

    def load(self, weights: dict[str, np.ndarray]) -> None:
        _load(self.net, weights)
        self.target.load_state_dict(self.net.state_dict())


class Reinforce:
    """REINFORCE with a softmax policy over actions (invalid actions masked out) and the
    mean return of recent episodes as baseline."""

    def __init__(self, in_dim: int, n_actions: int, *, hidden: int = 64, lr: float = 1e-3,
                 gamma: float = 0.7, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.net = mlp(in_dim, hidden, n_actions)
        self.optimiser = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.gamma = gamma
        self.baseline: deque = deque(maxlen=200)
        self._log_probs: list[torch.Tensor] = []

    def act(self, state: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *,
            greedy: bool) -> int:
        """``mask``: bool (n_actions,), True where the action is allowed."""
        logits = self.net(torch.as_tensor(state, dtype=torch.float32)[None])[0]
        logits = logits.masked_fill(~torch.as_tensor(mask), float("-inf"))
        if greedy:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits, 0)
        action = int(rng.choice(len(mask), p=probs.detach().double().numpy() /
                                float(probs.detach().double().sum())))
        self._log_probs.append(torch.log_softmax(logits, 0)[action])
        return action

    def finish_episode(self, rewards: list[float]) -> float:
        """One gradient step on the episode just played (its actions were sampled)."""
        returns, running = [], 0.0
        for reward in reversed(rewards):
            running = reward + self.gamma * running
            returns.insert(0, running)
        values = torch.tensor(returns, dtype=torch.float32)
        self.baseline.extend(returns)
        advantage = values - float(np.mean(self.baseline))
        log_probs = torch.stack(self._log_probs[:len(returns)])
        loss = -(log_probs * advantage).sum()
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        self._log_probs = []
        return float(loss.detach())

    def imitate(self, states: np.ndarray, masks: np.ndarray, actions: np.ndarray, *,
                epochs: int, rng: np.random.Generator, batch_size: int = 256) -> float:
        """Behaviour cloning: cross-entropy of the masked policy on a teacher's moves;
        returns the share of moves the policy then picks itself (greedy)."""
        x = torch.as_tensor(states, dtype=torch.float32)
        allowed = torch.as_tensor(masks)
        y = torch.as_tensor(actions, dtype=torch.int64)
        for _ in range(epochs):
            order = torch.as_tensor(rng.permutation(len(y)))
            for start in range(0, len(y), batch_size):
                rows = order[start:start + batch_size]
                logits = self.net(x[rows]).masked_fill(~allowed[rows], float("-inf"))
                loss = torch.nn.functional.cross_entropy(logits, y[rows])
                self.optimiser.zero_grad()
                loss.backward()
                self.optimiser.step()
        with torch.no_grad():
            picked = self.net(x).masked_fill(~allowed, float("-inf")).argmax(1)
        return float((picked == y).float().mean())

    def weights(self) -> dict[str, np.ndarray]:
        return _weights(self.net)

    def load(self, weights: dict[str, np.ndarray]) -> None:
        _load(self.net, weights)
