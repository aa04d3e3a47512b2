"""Averaging the trainable weights of several epochs (SWA-style), against hand-computed values."""

import pytest
import torch

from mlprojects.training.trainer import average_states
from registry.errors import TrainingError


def test_average_states_is_the_element_wise_mean():
    states = [
        {"lora_A": torch.tensor([[1.0, 2.0]]), "bias": torch.tensor(-6.0)},
        {"lora_A": torch.tensor([[3.0, 0.0]]), "bias": torch.tensor(-4.0)},
        {"lora_A": torch.tensor([[5.0, 1.0]]), "bias": torch.tensor(-5.0)},
    ]
    mean = average_states(states)
    assert torch.equal(mean["lora_A"], torch.tensor([[3.0, 1.0]]))
    assert mean["bias"].item() == -5.0
    assert states[0]["lora_A"][0, 0].item() == 1.0  # the inputs are left as they were


def test_average_of_one_state_is_that_state():
    state = {"w": torch.tensor([0.5, -0.25])}
    assert torch.equal(average_states([state])["w"], state["w"])


def test_average_of_nothing_is_refused():
    with pytest.raises(TrainingError, match="no states"):
        average_states([])
