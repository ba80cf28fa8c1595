"""EMATeacher: warm-up decay schedule, hand-computed averages, frozen copy, explicit mode, checkpoints."""
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


def _mixed_mode_student() -> nn.Sequential:
    """A student whose second half is in eval mode, as a Hugging Face encoder is after ``from_pretrained``."""
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 2)))
    student[2].eval()
    return student


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_teacher_mode_is_explicit_whatever_the_students_mode(mode: str) -> None:
    student = _mixed_mode_student()
    teacher = EMATeacher(student) if mode == "train" else EMATeacher(student, mode=mode)
    assert teacher.mode == mode
    assert {m.training for m in teacher.module.modules()} == {mode == "train"}
    assert not student[2].training and student[0].training  # the student keeps its own modes
    teacher.module.train(mode != "train")  # whatever happened to the copy since, a forward restores the mode
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, _: seen.append(mod.training)) for m in teacher.module.modules()]
    out = teacher(torch.randn(5, 3))
    for h in hooks:
        h.remove()
    assert len(seen) == len(list(teacher.module.modules())) and set(seen) == {mode == "train"}
    assert not out.requires_grad


def test_eval_mode_teacher_takes_the_students_batchnorm_statistics() -> None:
    """In eval mode BN normalises with running statistics, which an eval-mode forward never updates: the
    teacher takes the student's at every update. In train mode (official) the teacher keeps its own buffers."""
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    evaluating, training = EMATeacher(student, mode="eval"), EMATeacher(student)
    student(torch.randn(16, 3) + 5.0)
    for teacher in (evaluating, training):
        teacher.update(student)
    for name, buffer in student.named_buffers():
        assert torch.equal(dict(evaluating.module.named_buffers())[name], buffer)
    assert torch.equal(training.module[1].running_mean, torch.zeros(4))


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
    with pytest.raises(ValueError, match="mode"):
        EMATeacher(nn.Linear(2, 2), mode="inference")
    teacher = EMATeacher(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="do not match"):
        teacher.update(nn.Sequential(nn.Linear(2, 2)))
    assert teacher.num_updates == 0
