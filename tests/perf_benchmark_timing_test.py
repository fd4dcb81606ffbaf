"""How benchmarks/run.py times JAX against PyTorch: turns that alternate, warm-up before each turn,
PyTorch in a process of its own (benchmarks/torch_timer.py)."""

import importlib.util

import pytest

from benchmarks import common
from benchmarks import run as bench_run


def test_interleaved_alternates_turns_and_keeps_the_best_call():
  log = []
  times = {"jax": iter([5.0, 4.0, 3.0, 6.0, 9.0, 1.5]), "torch": iter([2.0, 7.0, 8.0, 1.0, 3.0, 2.5])}

  def timer(name):
    def turn(warm_seconds, n):
      log.append((name, warm_seconds, n))
      return [next(times[name]) for _ in range(n)]
    return turn

  best = bench_run.interleaved({"jax": timer("jax"), "torch": timer("torch")}, repeats=5, per_round=2,
                               warm_seconds=0.25)
  # ceil(5 / 2) = 3 rounds of 2 timed calls each; the order flips every round.
  assert [name for name, _, _ in log] == ["jax", "torch", "torch", "jax", "jax", "torch"]
  assert all(w == 0.25 and n == 2 for _, w, n in log)
  assert best == {"jax": 1.5, "torch": 1.0}


def test_warm_then_time_makes_untimed_calls_first():
  calls = []
  seconds = common.warm_then_time(lambda: calls.append(1), warm_seconds=0.0, calls=3)
  assert len(seconds) == 3 and all(s >= 0 for s in seconds)
  assert len(calls) == 4  # at least one warm-up call, even with no warm-up time


def test_numpy_matmul_peak_is_a_rate():
  assert common.numpy_matmul_peak(n=128, repeats=2) > 1e6  # FLOP/s


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch (the `bench` extra)")
def test_torch_timer_process():
  timer = bench_run.TorchTimer()
  try:
    assert timer.ask(op="threads")["threads"] >= 1
    assert timer.ask(op="matmul", n=64, repeats=2)["seconds"] > 0
    seconds = timer.seconds("train", "tiny", 64, 2, warm_seconds=0.0, calls=2)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)
    assert len(timer.seconds("infer", "tiny", 64, 2, warm_seconds=0.0, calls=1)) == 1
    # PyTorch's own mixed precision, the reference of the bfloat16 column
    assert len(timer.seconds("train", "tiny", 64, 2, warm_seconds=0.0, calls=1, dtype="bfloat16")) == 1
    with pytest.raises(RuntimeError, match="unknown dtype 'float16'"):
      timer.seconds("train", "tiny", 64, 2, warm_seconds=0.0, calls=1, dtype="float16")
    with pytest.raises(RuntimeError, match="unknown op 'bogus'"):
      timer.ask(op="bogus")
    assert timer.ask(op="threads")["threads"] >= 1  # still serving after an error
  finally:
    timer.close()
  assert timer.proc.returncode == 0
