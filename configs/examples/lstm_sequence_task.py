"""The data of configs/examples/lstm_sequence.yaml: random bit sequences and their delayed copy.

Each forward draws fresh sequences from the net's seeded generator (so a run is reproducible
and a resumed run draws what the uninterrupted run would have drawn):

- x (T, N, 1): bits as -1 or +1;
- cont (T, N): 0 at the first step (each batch is a new sequence), 1 after;
- label (T, N): the bit of ``delay`` steps earlier as class 0 or 1, and -1 (ignored by the loss)
  for the first ``delay`` steps, which have no earlier bit.

Remembering a bit for ``delay`` steps is what a recurrent layer has to learn: a model without
memory can do no better than chance (a loss of ln 2 = 0.693).
"""

import yaml

import netlayers


class DelayedBits(netlayers.Layer):
    """A source layer; param_str: ``{steps: T, streams: N, delay: d}``."""

    has_backward = False

    def LayerSetUp(self, bottom, top):
        options = yaml.safe_load(self.param_str or "") or {}
        self.steps = int(options.get("steps", 12))
        self.streams = int(options.get("streams", 32))
        self.delay = int(options.get("delay", 3))
        if not 0 < self.delay < self.steps:
            raise ValueError(f"delay must be between 1 and steps - 1 ({self.steps - 1}), got {self.delay}")

    def Reshape(self, bottom, top):
        top[0].reshape((self.steps, self.streams, 1))
        top[1].reshape((self.steps, self.streams))
        top[2].reshape((self.steps, self.streams))

    def Forward_cpu(self, bottom, top):
        bits = self.rng.integers(0, 2, size=(self.steps, self.streams))
        top[0].data[...] = (2 * bits - 1)[:, :, None]
        top[1].data[...] = 1
        top[1].data[0] = 0
        top[2].data[...] = -1
        top[2].data[self.delay :] = bits[: -self.delay]
