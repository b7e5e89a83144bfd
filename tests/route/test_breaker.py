from winnow.route.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_then_lets_one_trial_through():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=10, max_cooldown=25, clock=clock)
    breaker.record_failure()
    breaker.record_success()  # a success resets the count
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state == "closed" and breaker.allows_call()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allows_call() and breaker.seconds_left() == 10
    clock.now = 10
    assert breaker.state == "half-open" and breaker.allows_call()
    breaker.on_dispatch()
    assert not breaker.allows_call()  # one trial at a time
    breaker.record_failure()  # the trial failed: twice the rest
    assert breaker.state == "open" and breaker.seconds_left() == 20
    clock.now = 30
    breaker.on_dispatch()
    breaker.record_failure()
    assert breaker.seconds_left() == 25  # capped
    clock.now = 55
    breaker.on_dispatch()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.trips == 3


def test_trip_opens_at_once():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=10, clock=clock)
    breaker.trip()
    assert breaker.state == "open" and breaker.seconds_left() == 10
