"""Progress bars: text that stays when a notebook runs headless, tqdm.auto otherwise."""
import tqdm.auto
import tqdm.std

from otterlib.progress import HEADLESS_ENV, headless, progress_bar


def test_headless_bars_print_text_on_stdout_and_stay_at_100_percent(monkeypatch, capsys):
    monkeypatch.setenv(HEADLESS_ENV, "1")
    assert headless()
    bar = progress_bar(range(4), desc="steps", leave=False)
    assert type(bar) is tqdm.std.tqdm
    for _ in bar:
        pass
    captured = capsys.readouterr()
    assert captured.out.rstrip("\n").rsplit("\r", 1)[-1].startswith("steps: 100%")
    assert "4/4" in captured.out and captured.out.endswith("\n") and not captured.err


def test_bars_outside_the_runner_are_tqdm_auto(monkeypatch):
    monkeypatch.setenv(HEADLESS_ENV, "0")
    assert not headless()
    bar = progress_bar(range(2), disable=True)
    assert isinstance(bar, tqdm.auto.tqdm)
