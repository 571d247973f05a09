# SPDX-License-Identifier: GPL-3.0-or-later
"""The worker process and the add-on's client: progress, cancel, coalescing, death and restart.

Uses the diagnostics ``sleep`` request (no torch import in the worker), so each worker starts fast."""
from __future__ import annotations

import sys
import time

import pytest

from blender_addon.client import BackendOwner, BackendSettings, InProcessClient, WorkerClient
from ide3d_core.service import protocol as P


@pytest.fixture
def client(tmp_path):
    c = WorkerClient(BackendSettings(python=sys.executable, device="cpu", work_root=str(tmp_path)))
    yield c
    c.shutdown()


def _wait_for(predicate, client, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        client.poll()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_progress_streams_and_result_arrives(client):
    seen, done = [], []
    job = client.submit(P.SleepRequest(seconds=0.2, steps=4), on_done=done.append)
    while not job.finished:
        client.poll()
        seen.append(job.done)
        time.sleep(0.005)
    assert job.ok and job.result == P.SleepResult(steps_done=4) and done == [job]
    assert seen == sorted(seen) and set(seen) - {0, 4}  # intermediate progress was seen
    assert job.done == job.total == 4 and job.message == "done"


def test_cancel_stops_a_running_request(client):
    job = client.submit(P.SleepRequest(seconds=30, steps=300))
    _wait_for(lambda: job.done >= 1, client)
    t0 = time.monotonic()
    client.cancel(job)
    client.wait(job, timeout=10)
    assert job.state == "failed" and job.error.kind == "cancelled"
    assert time.monotonic() - t0 < 2.0
    assert client.call(P.SleepRequest(seconds=0.01, steps=1), timeout=10).ok  # the worker goes on


def test_coalesced_requests_latest_wins_and_stale_results_are_dropped(client):
    client.call(P.SleepRequest(seconds=0.0, steps=1), timeout=30)  # worker started
    finished = []
    jobs = [client.submit(P.SleepRequest(seconds=1.0, steps=50), coalesce_key="mask", on_done=finished.append)
            for _ in range(4)]
    t0 = time.monotonic()
    _wait_for(lambda: jobs[-1].finished, client)
    for _ in range(20):  # let any stale reply arrive: it must be dropped
        client.poll()
        time.sleep(0.01)
    assert [j.state for j in jobs] == ["superseded"] * 3 + ["done"]
    assert finished == [jobs[-1]]
    assert time.monotonic() - t0 < 3.0  # the stale ones did not each run their full second


def test_worker_death_is_an_error_value_and_next_request_restarts(client):
    first = client.call(P.SleepRequest(seconds=0.0, steps=1), timeout=30)
    pid = client.pid
    job = client.submit(P.SleepRequest(seconds=30, steps=300))
    _wait_for(lambda: job.done >= 1, client)
    client.kill()
    client.wait(job, timeout=10)
    assert first.ok and job.state == "failed" and job.error.kind == "worker_died"
    assert "next action restarts" in job.error_text()
    again = client.call(P.SleepRequest(seconds=0.0, steps=1), timeout=30)
    assert again.ok and client.pid != pid


def test_worker_exiting_by_itself_and_bad_interpreter_are_reported(client, tmp_path):
    job = client.call(P.SleepRequest(seconds=0.2, steps=4, exit_code=3), timeout=30)
    assert job.error.kind == "worker_died" and "exit code 3" in job.error_text()
    bad = WorkerClient(BackendSettings(python=str(tmp_path / "no-python"), work_root=str(tmp_path)))
    job = bad.call(P.PingRequest(), timeout=5)
    assert job.error.kind == "worker_died" and "not found" in job.error_text()
    bad.shutdown()


def test_in_process_client_and_owner(tmp_path):
    owner = BackendOwner()
    settings = BackendSettings(python="", mode="in_process", device="cpu", work_root=str(tmp_path))
    c = owner.client(settings)
    assert isinstance(c, InProcessClient) and owner.client(settings) is c
    job = c.call(P.SleepRequest(seconds=0.0, steps=2))
    assert job.ok and job.result.steps_done == 2
    job = c.call(P.MeshRequest(portrait_id="p", revision="r", document_file="/none.ide3d", resolution=8))
    assert not job.ok and job.error.kind in ("not_available", "bad_request", "backend_error")
    other = owner.client(BackendSettings(python=sys.executable, work_root=str(tmp_path)))
    assert isinstance(other, WorkerClient) and not c.workdir.exists()
    owner.shutdown()
    assert owner.current is None
