"""A bounded pipeline of threads: each stage runs in its own thread, joined by bounded queues.

    for out in pipelined(frames, [track, generate, finish], queue_size=8): ...

Each stage is a function from an iterator to an iterator (a generator function); the first reads
`items` in its thread, and the caller's loop consumes the last stage's output, so at most
`queue_size` items wait between two stages and memory is bounded by the queue sizes, never by how
many items there are. Threads overlap where the work releases the GIL (JAX, onnxruntime, PyAV's
decoding and encoding, numpy). An exception in any stage is raised in the caller's loop; when the
caller stops early (an exception, or closing the iterator) every stage thread is stopped.
"""

import queue
import threading
from typing import Callable, Iterable, Iterator, Sequence

_END = object()
_POLL_S = 0.1


class _Failed:
  def __init__(self, error: BaseException):
    self.error = error


class _Stopped(Exception):
  """The caller stopped reading; stage threads unwind with this."""


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
  while True:
    if stop.is_set():
      raise _Stopped()
    try:
      q.put(item, timeout=_POLL_S)
      return
    except queue.Full:
      continue


def _drain(q: queue.Queue, stop: threading.Event) -> Iterator:
  while True:
    try:
      item = q.get(timeout=_POLL_S)
    except queue.Empty:
      if stop.is_set():
        raise _Stopped() from None
      continue
    if item is _END:
      return
    if isinstance(item, _Failed):  # an upstream stage failed: pass it on
      raise _Forward(item.error)
    yield item


class _Forward(Exception):
  def __init__(self, error: BaseException):
    super().__init__(str(error))
    self.error = error


def _run_stage(stage: Callable, inputs: Iterable, out: queue.Queue, stop: threading.Event) -> None:
  try:
    for item in stage(inputs):
      _put(out, item, stop)
    _put(out, _END, stop)
  except _Stopped:
    return
  except _Forward as f:
    _put_quiet(out, _Failed(f.error), stop)
  except BaseException as e:  # pylint: disable=broad-except
    _put_quiet(out, _Failed(e), stop)


def _put_quiet(q, item, stop):
  try:
    _put(q, item, stop)
  except _Stopped:
    pass


def pipelined(items: Iterable, stages: Sequence[Callable[[Iterator], Iterator]], queue_size: int = 8) -> Iterator:
  """Yields what the last of `stages` yields, in order (see module docstring)."""
  if queue_size < 1:
    raise ValueError(f"queue_size must be >= 1, got {queue_size}")
  stop = threading.Event()
  queues = [queue.Queue(maxsize=queue_size) for _ in stages]
  threads = []
  for k, stage in enumerate(stages):
    inputs = items if k == 0 else _drain(queues[k - 1], stop)
    t = threading.Thread(target=_run_stage, args=(stage, inputs, queues[k], stop), daemon=True,
                         name=f"pipeline-{getattr(stage, '__name__', k)}")
    t.start()
    threads.append(t)
  try:
    while True:
      item = queues[-1].get()
      if item is _END:
        return
      if isinstance(item, _Failed):
        raise item.error
      yield item
  finally:
    stop.set()
    for t in threads:
      t.join()
