"""The bounded request queue: one request runs at a time, a full queue answers 503 with
Retry-After, a late one 504. Slow work is held on an event, so nothing depends on timing
except the deliberately short timeouts."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.search.server_helpers import Gated, build_tiny_index, client_of, with_reranker
from winnow.search.exceptions import SearchInputError, ServerBusyError, ServerTimeoutError
from winnow.search.server_queue import RequestQueue
from winnow.search.server_service import SearchService

BODY = {"query": "cat", "documents": ["a cat", "a dog"]}


def held():
    """``(work, started, release)``: work blocks until release is set, then returns "done"."""
    started, release = threading.Event(), threading.Event()

    def work():
        started.set()
        release.wait(timeout=30)
        return "done"

    return work, started, release


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- the queue ---------------------------------------------------------------------------------


def test_requests_run_one_at_a_time_in_arrival_order():
    queue = RequestQueue(max_queue=4, timeout_s=30)
    ran = []

    def work(i):
        ran.append((i, threading.get_ident()))
        return i

    async def scenario():
        return await asyncio.gather(*(queue.run(lambda i=i: work(i)) for i in range(4)))

    assert asyncio.run(scenario()) == [0, 1, 2, 3]
    assert [i for i, _ in ran] == [0, 1, 2, 3]
    threads = {thread for _, thread in ran}
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert queue.admitted == 0
    queue.close()


def test_a_full_queue_refuses_at_once_with_a_retry_estimate():
    queue = RequestQueue(max_queue=1, timeout_s=30)
    work, started, release = held()

    async def scenario():
        first = asyncio.create_task(queue.run(work))
        await asyncio.to_thread(started.wait, 30)
        with pytest.raises(ServerBusyError) as busy:
            await queue.run(lambda: "never")
        release.set()
        return await first, busy.value

    result, busy = asyncio.run(scenario())
    assert result == "done" and queue.admitted == 0
    assert busy.retry_after_s >= 1 and isinstance(busy, RuntimeError)
    assert "1 requests are waiting or running" in str(busy)
    queue.close()


def test_a_late_request_times_out_and_a_waiting_one_never_runs():
    queue = RequestQueue(max_queue=2, timeout_s=0.1)
    work, started, release = held()
    ran = []

    async def scenario():
        first = asyncio.create_task(queue.run(work))
        await asyncio.to_thread(started.wait, 30)
        second = asyncio.create_task(queue.run(lambda: ran.append("second")))
        return await asyncio.gather(first, second, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(outcome, ServerTimeoutError) for outcome in outcomes)
    assert "request timeout of 0.1 s (1 requests were ahead" in str(outcomes[1])
    assert queue.admitted == 1  # the running one keeps its place until it ends
    release.set()
    wait_until(lambda: queue.admitted == 0)
    assert ran == []
    queue.close()


def test_an_error_of_the_work_propagates_and_frees_the_place():
    queue = RequestQueue(max_queue=1, timeout_s=30)
    with pytest.raises(ZeroDivisionError):
        asyncio.run(queue.run(lambda: 1 / 0))
    assert queue.admitted == 0
    assert asyncio.run(queue.run(lambda: 7)) == 7
    queue.close()


@pytest.mark.parametrize(("max_queue", "timeout_s"), [(0, 1.0), (1, 0), (1, -1.0)])
def test_bad_queue_settings_are_refused(max_queue, timeout_s):
    with pytest.raises(SearchInputError):
        RequestQueue(max_queue, timeout_s)


# -- through the API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    return SearchService.from_index(build_tiny_index(tmp_path_factory.mktemp("search-queue")))


def test_a_full_server_answers_503_with_retry_after_and_health_stays_up(service):
    gated = Gated()
    client = client_of(with_reranker(service, gated), max_queue=1)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/v1/rerank", json=BODY)
        assert gated.started.wait(30)
        busy = [client.get("/search", params={"q": "cat"}), client.post("/v1/rerank", json=BODY)]
        health = client.get("/health")
        gated.release.set()
        assert first.result(timeout=30).status_code == 200
    for reply in busy:
        assert reply.status_code == 503
        assert int(reply.headers["Retry-After"]) >= 1
        assert reply.json()["detail"].startswith("the server is busy")
    assert health.status_code == 200


def test_a_request_past_the_timeout_answers_504(service):
    gated = Gated()
    client = client_of(with_reranker(service, gated), request_timeout_s=0.2)
    reply = client.post("/v1/rerank", json=BODY)
    gated.release.set()
    assert reply.status_code == 504
    assert "no answer within the request timeout of 0.2 s" in reply.json()["detail"]
    wait_until(lambda: client.app.state.queue.admitted == 0)
    assert client.post("/v1/rerank", json=BODY).status_code == 200
