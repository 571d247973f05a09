# SPDX-License-Identifier: GPL-3.0-or-later
"""A worker fed garbage answers or exits, never goes silent; the add-on's client times out, checks the
backend's protocol version and names the telling log line when the worker dies."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pytest

from blender_addon.client import BackendSettings, WorkerClient, _ClientBase, telling_line
from ide3d_core.service import protocol as P
from ide3d_core.service.handlers import Backend
from ide3d_core.service.worker import serve

V = P.PROTOCOL_VERSION


def _req(rid, kind="sleep", params=None, v=V, **extra):
    body = {"v": v, "type": "request", "id": rid, "kind": kind,
            "params": {"seconds": 0.0, "steps": 1} if params is None else params, "out_dir": "/tmp/ide3d-x"}
    body.update(extra)
    return json.dumps(body).encode() + b"\n"


GARBAGE = [
    b"\xff\xfe\x00not utf-8 at all\n",
    b"[" * 200_000 + b"]" * 200_000 + b"\n",
    b'{"v": %d, "type": "request", "id": "abc", "kind": "sleep", "params": {}, "out_dir": "/tmp"}\n' % V,
    b'{"v": %d, "type": "request", "id": true, "kind": "sleep", "params": {}, "out_dir": "/tmp"}\n' % V,
    b'{"v": %d, "type": "cancel", "id": [1]}\n' % V,
    b"null\n", b"42\n", b'"text"\n', b"{}\n", b"\n", b"   \n",
    b'{"v": %d, "type": "request", "id": 1, "kind": "sleep", "params": {"seconds": 0, "deep": ' % V
    + b"[" * 100_000 + b"]" * 100_000 + b"}}\n",
]


def _serve(lines: list[bytes]) -> list:
    stdin = io.TextIOWrapper(io.BytesIO(b"".join(lines)), encoding="utf-8")
    out = io.StringIO()
    assert serve(Backend(model="config:tiny", device="cpu"), stdin, out) == 0  # exits when stdin ends
    return [P.decode(line) for line in out.getvalue().splitlines()]  # every reply is a valid message


def test_every_request_with_an_id_is_answered_and_garbage_never_stops_the_reader(monkeypatch):
    monkeypatch.setattr(P, "MAX_LINE_CHARS", 100_000)  # the 200k-bracket line is also over-long
    lines = GARBAGE + [
        _req(7, params={"seconds": 0.0, "colour": "red"}),           # unknown field (a newer add-on)
        _req(8, v=V - 1),                                           # an older add-on
        _req(9, kind="teleport", params={}),                        # an unknown request kind
        _req(10, extra_field=1),                                    # an unknown envelope field
        _req(11, params={"seconds": "soon"}),                       # a value of the wrong type
        b"x" * 150_000 + b"\n",                                     # over the line limit
        _req(12),                                                   # and a good one still works
    ]
    msgs = _serve(lines)
    assert isinstance(msgs[0], P.HelloMessage)
    replies = {m.id: m for m in msgs if isinstance(m, P.ResponseMessage)}
    assert sorted(replies) == [1, 7, 8, 9, 10, 11, 12]
    for rid in (1, 7, 8, 9, 10):
        assert replies[rid].error.kind == "bad_request", rid
    assert "unknown field(s) ['colour']" in replies[7].error.message
    assert f"v{V}" in replies[8].error.message and f"v{V - 1}" in replies[8].error.message
    assert replies[9].kind == "teleport" and "unknown request kind" in replies[9].error.message
    assert replies[11].error.kind == "backend_error" and "\n" not in replies[11].error.message
    assert replies[12].ok and replies[12].result == P.SleepResult(steps_done=1)


def test_protocol_decode_refuses_without_exceptions_of_other_types():
    for line in [b.decode("utf-8", "replace") for b in GARBAGE] + ['{"v": %d, "type": "hello"}' % V]:
        with pytest.raises(P.ProtocolError):
            P.decode(line)
    assert P.peek(b"\xff{") == {"v": None, "type": None, "id": None, "kind": None}
    assert P.peek(_req(5))["id"] == 5 and P.peek(_req(True))["id"] is None


def test_a_real_worker_fed_garbage_answers_then_exits_when_stdin_closes(tmp_path):
    proc = subprocess.Popen([sys.executable, "-u", "-m", "ide3d_core.service.worker", "--model", "config:tiny",
                             "--device", "cpu"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        assert b'"hello"' in proc.stdout.readline()
        proc.stdin.write(b"".join(GARBAGE) + _req(3, params={"bogus": 1}) + _req(4))
        proc.stdin.flush()
        got = {}
        while len(got) < 3:  # replies to ids 1 and 3 (rejected) and 4 (run), in any order
            msg = json.loads(proc.stdout.readline())
            if msg["type"] == "response":
                got[msg["id"]] = msg["error"] is None
        assert got == {1: False, 3: False, 4: True}
        proc.stdin.write(b"\xff\xff garbage to the end")
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class _Silent(_ClientBase):
    """A client whose backend never answers (a hung worker)."""

    def _send(self, job, line):
        pass

    def _send_cancel(self, job_id):
        self.cancelled = job_id


def test_jobs_time_out_on_their_own_deadline_and_on_a_silent_backend(tmp_path):
    c = _Silent(BackendSettings(python=sys.executable, work_root=str(tmp_path), stall_timeout=0))
    job = c.submit(P.SleepRequest(seconds=1), timeout=0.05)
    assert c.poll() == [] or not job.finished
    time.sleep(0.08)
    assert c.poll() == [job] and job.error.kind == "timed_out" and c.cancelled == job.id
    c = _Silent(BackendSettings(python=sys.executable, work_root=str(tmp_path), stall_timeout=0.05))
    jobs = [c.submit(P.SleepRequest(seconds=1)) for _ in range(2)]
    time.sleep(0.08)
    assert c.poll() == jobs and all(j.error.kind == "timed_out" for j in jobs)


def test_a_backend_of_another_protocol_version_is_named(tmp_path):
    c = _Silent(BackendSettings(python=sys.executable, work_root=str(tmp_path)))
    job = c.submit(P.SleepRequest(seconds=1))
    c._events.put(json.dumps({"v": V + 5, "type": "hello", "protocol": V + 5, "pid": 1, "python": "x",
                              "something_new": True}))
    assert c.poll() == [job]
    assert f"protocol v{V + 5}, this add-on v{V}" in job.error.message
    later = c.submit(P.SleepRequest(seconds=1))
    assert c.poll() == [later] and later.error.message == job.error.message  # fails at once, no hang


def test_a_silent_worker_is_killed_and_its_jobs_fail(tmp_path):
    import dataclasses

    c = WorkerClient(BackendSettings(python=sys.executable, device="cpu", work_root=str(tmp_path)))
    try:
        assert c.call(P.SleepRequest(seconds=0.0, steps=1), timeout=120).ok  # started (slowly on a busy machine)
        c.settings = dataclasses.replace(c.settings, stall_timeout=1.5)
        pid = c.pid
        job = c.submit(P.SleepRequest(seconds=60, steps=1))  # no progress for a minute
        c.wait(job, timeout=20)
        assert job.error is not None and job.error.kind == "timed_out", job.error
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import os
                os.kill(pid, 0)
                time.sleep(0.05)
            except ProcessLookupError:
                break
        else:
            pytest.fail("the silent worker was not killed")
        c.settings = dataclasses.replace(c.settings, stall_timeout=0)
        assert c.call(P.SleepRequest(seconds=0.0, steps=1), timeout=120).ok  # a new worker serves
    finally:
        c.shutdown()


def test_the_telling_log_line_skips_library_noise():
    log = "\n".join([
        "W0000 00:00:1700000000.1 123 inference_feedback_manager.cc:114] Feedback manager requires...",
        "I0000 00:00:1700000000.2 123 gl_context.cc:357] GL version: 3.2",
        "/x/site-packages/torch/functional.py:5: UserWarning: something deprecated",
        "  warnings.warn(",
        "Traceback (most recent call last):",
        '  File "/x/worker.py", line 3, in <module>',
        "    main()",
        "MemoryError: could not allocate 4096 MiB",
        "W0000 00:00:1700000001.0 123 some_noise.cc:1] trailing noise",
    ])
    assert telling_line(log) == "MemoryError: could not allocate 4096 MiB"
    assert telling_line("I0000 x\n[worker] loading the model\nW0000 y") == "[worker] loading the model"
    assert telling_line("") == ""
