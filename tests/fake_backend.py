"""A third evaluation backend living outside the package (as a user's would), for tests/test_plugins.py.

It "generates" each item's label, so a cell scored through it is 100 % correct (the tiny HF model is near chance):
the accuracy tells which backend ran. Every call is recorded on the class.
"""

from __future__ import annotations

from clsrl_exp.generation import Generator, register_backend


@register_backend("echo-label")
class EchoLabelGenerator(Generator):
    needs_model = False  # never touches the model: run_cell must not need to load one for it
    calls: list[list[str]] = []

    def __init__(self, run, *, model, processor, model_path, device):
        self.texts_seen: list[str] = []

    def batches(self, items, image_size, batch_size):
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            self.texts_seen += [text for _, text in chunk]
            yield [ex for ex, _ in chunk], [ex.label for ex, _ in chunk], []

    def generate(self, inputs):
        type(self).calls.append(list(inputs))
        return list(inputs), [1] * len(inputs)
