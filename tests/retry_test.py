"""modelsteal.retry: attempts, delays, Retry-After, and what is not retried."""

import pytest

from modelsteal.retry import call_with_retries
from modelsteal.retry import RetriesExhausted
from modelsteal.retry import RetryPolicy
from modelsteal.retry import Transient


def test_transient_failures_are_retried_until_success():
  waits, calls = [], []

  def attempt():
    calls.append(1)
    if len(calls) < 3:
      raise Transient('busy')
    return 'ok'

  assert call_with_retries(attempt, RetryPolicy(retries=4, backoff_s=1.0),
                           sleep=waits.append) == 'ok'
  assert len(calls) == 3 and len(waits) == 2
  # jittered exponential: attempt n waits 50-100% of backoff * 2**n
  assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0


def test_exhausted_retries_carry_the_last_failure():
  waits = []
  with pytest.raises(RetriesExhausted) as e:
    call_with_retries(lambda: (_ for _ in ()).throw(Transient('HTTP 503')),
                      RetryPolicy(retries=2, backoff_s=0.1),
                      sleep=waits.append)
  assert e.value.attempts == 3 and e.value.last == 'HTTP 503'
  assert len(waits) == 2  # no wait after the last attempt


def test_other_errors_are_not_retried():
  calls = []

  def attempt():
    calls.append(1)
    raise KeyError('bad request')

  with pytest.raises(KeyError):
    call_with_retries(attempt, RetryPolicy(), sleep=lambda s: None)
  assert len(calls) == 1


def test_retry_after_and_the_cap():
  p = RetryPolicy(retries=3, backoff_s=0.1, max_backoff_s=5.0)
  assert p.delay(0, '3') == 3.0  # the server's Retry-After wins when longer
  assert p.delay(0, 60) == 5.0  # but never past the cap
  assert 0.05 <= p.delay(0, 'Wed, 21 Oct 2015 07:28:00 GMT') <= 0.1
  with pytest.raises(ValueError):
    RetryPolicy(retries=-1)
