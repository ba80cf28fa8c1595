"""EMATeacher: warm-up decay schedule, hand-computed averages, frozen copy, checkpoints."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from otterlib.ema import EMATeacher


def _linear(weight: list[float], bias: float) -> nn.Linear:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weight]))
        layer.bias.fill_(bias)
    return layer


def _set(layer: nn.Linear, weight: list[float], bias: float) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weight]))
        layer.bias.fill_(bias)


def test_decay_schedule_values() -> None:
    assert EMATeacher.decay_at(0) == pytest.approx(0.1)
    assert EMATeacher.decay_at(1) == pytest.approx(2 / 11)
    assert EMATeacher.decay_at(10) == pytest.approx(0.55)
    assert EMATeacher.decay_at(100_000) == 0.999
    assert EMATeacher.decay_at(8989) < 0.999 <= EMATeacher.decay_at(8990) + 1e-15
    assert EMATeacher.decay_at(10, max_decay=0.5) == 0.5
    with pytest.raises(ValueError):
        EMATeacher.decay_at(-1)


def test_two_updates_give_the_hand_computed_average() -> None:
    student = _linear([1.0, 2.0], 3.0)
    teacher = EMATeacher(student)
    _set(student, [4.0, -2.0], 0.0)
    assert teacher.update(student) == pytest.approx(2 / 11)  # first update: t = 1
    _set(student, [0.0, 10.0], 6.0)
    assert teacher.update(student) == pytest.approx(3 / 12)  # second: t = 2
    # w1 = 2/11·w0 + 9/11·s1, w2 = 1/4·w1 + 3/4·s2
    expected_w = [0.25 * (2 / 11 * 1 + 9 / 11 * 4) + 0.75 * 0, 0.25 * (2 / 11 * 2 + 9 / 11 * -2) + 0.75 * 10]
    expected_b = 0.25 * (2 / 11 * 3 + 9 / 11 * 0) + 0.75 * 6
    torch.testing.assert_close(teacher.module.weight, torch.tensor([expected_w]))
    torch.testing.assert_close(teacher.module.bias, torch.tensor([expected_b]))
    assert teacher.num_updates == 2
    torch.testing.assert_close(student.weight, torch.tensor([[0.0, 10.0]]))  # the student is untouched


def test_teacher_is_a_frozen_independent_copy() -> None:
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = EMATeacher(student)
    assert all(not p.requires_grad for p in teacher.module.parameters())
    assert all(p.requires_grad for p in student.parameters())
    for s, t in zip(student.parameters(), teacher.module.parameters()):
        assert s.data_ptr() != t.data_ptr() and torch.equal(s, t)
    out = teacher.module(torch.randn(5, 3))
    assert not out.requires_grad


def test_only_parameters_are_averaged() -> None:
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = EMATeacher(student)
    student.train()
    student(torch.randn(16, 3) + 5.0)  # moves the student's BN running statistics
    with torch.no_grad():
        student[0].weight.add_(1.0)
    teacher.update(student)
    assert torch.equal(teacher.module[1].running_mean, torch.zeros(4))
    assert not torch.equal(student[1].running_mean, torch.zeros(4))
    assert not torch.equal(teacher.module[0].weight, student[0].weight - 1.0)


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    student = nn.Linear(3, 2)
    teacher = EMATeacher(student, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            student.weight.add_(torch.randn_like(student.weight))
        teacher.update(student)
    state = teacher.state_dict()
    restored = EMATeacher(nn.Linear(3, 2))
    restored.load_state_dict(state)
    assert restored.num_updates == 3 and restored.decay == 0.99
    for a, b in zip(restored.module.parameters(), teacher.module.parameters()):
        assert torch.equal(a, b)
    assert all(not p.requires_grad for p in restored.module.parameters())
    with pytest.raises(ValueError, match="lacks"):
        restored.load_state_dict({"module": state["module"]})


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        EMATeacher(nn.Linear(2, 2), decay=1.5)
    teacher = EMATeacher(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="do not match"):
        teacher.update(nn.Sequential(nn.Linear(2, 2)))
    assert teacher.num_updates == 0
