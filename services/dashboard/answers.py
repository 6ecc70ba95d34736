"""`SharedAnswers`: each read answer made once per poll of the store and shared by every client.

Fifty pages polling the dashboard ask the same questions; the store and the view change once a poll
(`RunView.poll_s`, 1 s). So an answer (the JSON bytes of a response model) is kept until it is
`ttl_s` old or the view has polled since, whichever comes first; a client asking for a stale answer
while another makes it waits for that one. Keys carry the query parameters; at most `cap` answers are
kept, the oldest dropped first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from pydantic import BaseModel

from services.dashboard.view import RunView


@dataclass(frozen=True)
class _Answer:
    body: bytes
    made: float  # time.monotonic()
    polled_at: float | None  # the view's refreshed_at when it was made


class SharedAnswers:
    def __init__(self, view: RunView, ttl_s: float, cap: int = 64) -> None:
        if ttl_s <= 0 or cap < 1:
            raise ValueError(f"SharedAnswers needs ttl_s > 0 and cap >= 1; got ttl_s={ttl_s}, cap={cap}")
        self.view = view
        self.ttl_s = ttl_s
        self.cap = cap
        self._answers: OrderedDict[tuple[str, Hashable], _Answer] = OrderedDict()
        self._lock = threading.Lock()  # guards _answers and _making
        self._making: dict[str, threading.Lock] = {}  # one per endpoint: one maker at a time

    def get(self, name: str, params: Hashable, make: Callable[[], BaseModel]) -> bytes:
        """The JSON of `make()` for endpoint `name` with `params`, made again only when stale."""
        key = (name, params)
        with self._lock:
            making = self._making.setdefault(name, threading.Lock())
        with making:
            with self._lock:
                answer = self._answers.get(key)
            polled_at = self.view.refreshed_at
            if answer is not None and answer.polled_at == polled_at and time.monotonic() - answer.made < self.ttl_s:
                return answer.body
            body = make().model_dump_json().encode()
            with self._lock:
                self._answers[key] = _Answer(body, time.monotonic(), polled_at)
                self._answers.move_to_end(key)
                while len(self._answers) > self.cap:
                    self._answers.popitem(last=False)
            return body
