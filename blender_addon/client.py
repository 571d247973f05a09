# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's side of the backend service: owns the worker process and tracks jobs.

Nothing here touches ``bpy``: results are handed to ``on_done`` callbacks from :meth:`poll`, which the
add-on calls on Blender's main thread (modal operators, a timer, or directly in tests), so Blender data
is only ever changed there. Only the standard library is used (plus the shared protocol module).

* :class:`WorkerClient` starts ``python -m ide3d_core.service.worker`` with the backend interpreter,
  writes requests to its stdin and reads progress/responses from its stdout on a reader thread.
  If the process dies, every unfinished job fails with a ``worker_died`` error value and the next
  :meth:`~WorkerClient.submit` starts a new process.
* :class:`InProcessClient` runs the service synchronously in this process (tests, ``blender -b``).
* Jobs submitted with a ``coalesce_key`` supersede unfinished jobs with the same key: those are
  cancelled in the backend and their results are dropped (latest request wins).
* :class:`BackendOwner` holds at most one client and replaces it when the settings change.
* Nothing waits forever: a job may carry its own ``timeout`` (seconds from submission), and a worker
  that sends nothing at all for ``BackendSettings.stall_timeout`` seconds while jobs are pending is
  killed; both end the jobs with a ``timed_out`` error value. The worker's hello is checked: a backend
  of another protocol version fails every job with a message naming both versions.
"""
from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ._shared import protocol as P

MODES = ("worker", "in_process")


@dataclass(frozen=True)
class BackendSettings:
    """How to reach the backend.

    Attributes:
        python: interpreter of the backend environment (has torch and ide3d_core), worker mode only.
        model: model folder, ``config:NAME``, or ``""`` for the bundled model.
        device: ``auto`` | ``cuda`` | ``cpu``.
        mode: ``worker`` (a separate process) or ``in_process`` (synchronous, this interpreter).
        work_root: folder for the per-client scratch folder (``""``: the system temp folder).
        threads: torch CPU threads in the worker (0: torch's default).
        stall_timeout: seconds the worker may stay completely silent (no progress, no response) while
            jobs are pending before it is killed and the jobs fail with ``timed_out`` (0: never).
        entry: the interpreter arguments that start the worker, in place of
            ``-u -m ide3d_core.service.worker`` (Set Up Backend's target runs through
            ``backend_boot.py``, see ``setup_ui.installed_backend``).
    """

    python: str
    model: str = ""
    device: str = "auto"
    mode: str = "worker"
    work_root: str = ""
    threads: int = 0
    stall_timeout: float = 900.0
    entry: tuple = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"backend mode must be one of {MODES}, got {self.mode!r}")


class Job:
    """One request and what became of it. States: ``pending`` -> ``done`` | ``failed``, or
    ``superseded`` (a newer job with the same coalesce key replaced it; its result is dropped)."""

    def __init__(self, job_id: int, request: Any, out_dir: Path, coalesce_key: str | None,
                 on_done: Callable[["Job"], None] | None, timeout: float | None = None) -> None:
        self.id = job_id
        self.request = request
        self.kind: str = request.KIND
        self.out_dir = out_dir
        self.coalesce_key = coalesce_key
        self.on_done = on_done
        self.state = "pending"
        self.done, self.total, self.message = 0, 0, ""
        self.result: Any = None
        self.error: P.ErrorInfo | None = None
        #: ``time.monotonic()`` after which the job fails with ``timed_out`` (None: no limit).
        self.deadline = None if timeout is None else time.monotonic() + timeout

    @property
    def finished(self) -> bool:
        return self.state != "pending"

    @property
    def ok(self) -> bool:
        return self.state == "done"

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total > 0 else 0.0

    def error_text(self) -> str:
        """One line for ``Operator.report``."""
        if self.error is None:
            return ""
        return self.error.message.splitlines()[0] if self.error.message else self.error.kind

    def cleanup(self) -> None:
        """Delete the job's scratch files (call after the result was applied)."""
        shutil.rmtree(self.out_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.kind}, {self.state})"


class _Died:
    def __init__(self, generation: int, returncode: int | None) -> None:
        self.generation, self.returncode = generation, returncode


class _ClientBase:
    """Job bookkeeping shared by both modes; subclasses deliver request lines."""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        root = settings.work_root or None
        if root:
            os.makedirs(root, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="ide3d-backend-", dir=root))
        self._events: queue.Queue = queue.Queue()
        self._active: dict[int, Job] = {}
        self._failed_at_submit: list[Job] = []
        self._next_id = 1
        #: When the backend was last heard from (any line), ``time.monotonic()``.
        self._last_heard = time.monotonic()
        #: Set when the backend speaks another protocol version: every job fails with it.
        self.version_error: str | None = None

    # -- public --------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self._active)

    def submit(self, request: Any, coalesce_key: str | None = None,
               on_done: Callable[[Job], None] | None = None, timeout: float | None = None) -> Job:
        """Queue ``request``; the job finishes during a later :meth:`poll` (at once in-process).
        ``timeout``: seconds after which the job fails with ``timed_out`` (and is cancelled in the backend)."""
        job = Job(self._next_id, request, self.workdir / f"job-{self._next_id}", coalesce_key, on_done, timeout)
        self._next_id += 1
        if not self._active:
            self._last_heard = time.monotonic()  # the silence clock runs only while jobs are pending
        if coalesce_key is not None:
            for old in [j for j in self._active.values() if j.coalesce_key == coalesce_key]:
                old.state = "superseded"
                del self._active[old.id]
                self._send_cancel(old.id)
                old.cleanup()
        self._active[job.id] = job
        if self.version_error is not None:
            self._fail_at_submit(job, "backend_error", self.version_error)
            return job
        self._send(job, P.encode(P.RequestMessage(id=job.id, request=request, out_dir=str(job.out_dir))))
        return job

    def cancel(self, job: Job) -> None:
        """Ask the backend to stop ``job``; it finishes with a ``cancelled`` error value."""
        if job.id in self._active:
            self._send_cancel(job.id)

    def poll(self) -> list[Job]:
        """Process what the backend sent; returns the jobs that finished (not superseded ones), after
        calling their ``on_done``. Call on the main thread."""
        finished, self._failed_at_submit = self._failed_at_submit, []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, _Died):
                finished += self._on_died(event)
                continue
            head = P.peek(event)
            if head["type"] == "hello" and head["v"] != P.PROTOCOL_VERSION:
                self.version_error = (f"the backend speaks protocol v{head['v']}, this add-on v{P.PROTOCOL_VERSION}: "
                                      "install the add-on and the backend from the same release")
                finished += self._fail_all("backend_error", self.version_error)
                continue
            try:
                msg = P.decode(event)
            except P.ProtocolError as exc:
                finished += self._fail_all("backend_error", f"the backend sent an invalid message: {exc}")
                continue
            job = self._active.get(getattr(msg, "id", -1))
            if job is None:
                continue  # hello, or a stale job's message: dropped
            if isinstance(msg, P.ProgressMessage):
                job.done, job.total, job.message = msg.done, msg.total, msg.message
            elif isinstance(msg, P.ResponseMessage):
                del self._active[job.id]
                job.result, job.error = msg.result, msg.error
                job.state = "done" if msg.ok else "failed"
                finished.append(job)
        finished += self._expire()
        for job in finished:
            if job.on_done is not None:
                job.on_done(job)
        return finished

    def wait(self, job: Job, timeout: float | None = None, interval: float = 0.01) -> Job:
        """Poll until ``job`` finished (or ``timeout`` seconds passed); returns it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not job.finished:
            self.poll()
            if job.finished or (deadline is not None and time.monotonic() > deadline):
                break
            time.sleep(interval)
        return job

    def call(self, request: Any, timeout: float | None = None) -> Job:
        """Submit and wait (scripts, tests)."""
        return self.wait(self.submit(request), timeout)

    def shutdown(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- internals -----------------------------------------------------------------------------
    def _expire(self) -> list[Job]:
        """Fail the jobs past their own deadline (cancelled in the backend) and, when the backend has
        been silent for ``stall_timeout`` seconds with jobs pending, all of them (see :meth:`_stalled`)."""
        now = time.monotonic()
        late = [j for j in self._active.values() if j.deadline is not None and now > j.deadline]
        for job in late:
            del self._active[job.id]
            self._send_cancel(job.id)
            job.state, job.error = "failed", P.ErrorInfo("timed_out", "the backend did not finish this request in time")
        stall = self.settings.stall_timeout
        if self._active and stall > 0 and now - self._last_heard > stall:
            late += self._stalled(now - self._last_heard)
        return late

    def _stalled(self, seconds: float) -> list[Job]:
        return self._fail_all("timed_out", f"the backend sent nothing for {seconds:.0f} s")

    def _fail_all(self, kind: str, message: str) -> list[Job]:
        jobs = list(self._active.values())
        self._active.clear()
        for job in jobs:
            job.state, job.error = "failed", P.ErrorInfo(kind, message)
        return jobs

    def _on_died(self, event: _Died) -> list[Job]:
        return []

    def _fail_at_submit(self, job: Job, kind: str, message: str) -> None:
        """A job that could not be sent: it finishes (with ``on_done``) at the next :meth:`poll`."""
        del self._active[job.id]
        job.state, job.error = "failed", P.ErrorInfo(kind, message)
        self._failed_at_submit.append(job)

    def _send(self, job: Job, line: str) -> None:
        raise NotImplementedError

    def _send_cancel(self, job_id: int) -> None:
        raise NotImplementedError


class WorkerClient(_ClientBase):
    """A worker process running ``ide3d_core.service.worker`` (started on the first submit)."""

    def __init__(self, settings: BackendSettings) -> None:
        super().__init__(settings)
        self._proc: subprocess.Popen | None = None
        self._generation = 0
        self._log_start = 0
        self._lock = threading.Lock()
        self.log_path = self.workdir / "worker.log"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        s = self.settings
        entry = list(s.entry) or ["-u", "-m", "ide3d_core.service.worker"]
        cmd = [s.python, *entry, "--model", s.model, "--device", s.device]
        if s.threads > 0:
            cmd += ["--threads", str(s.threads)]
        return cmd

    def _start(self) -> None:
        if not self.settings.python or not os.path.exists(self.settings.python):
            raise FileNotFoundError(f"backend Python interpreter not found: {self.settings.python!r}; "
                                    "set it in the add-on preferences")
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)  # Blender's, not the backend's
        env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        self._generation += 1
        try:
            self._log_start = self.log_path.stat().st_size  # this worker's lines start here
        except OSError:
            self._log_start = 0
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=log, env=env, text=True, encoding="utf-8", bufsize=1,
                                          creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))  # Windows: no console
        threading.Thread(target=self._read, args=(self._proc, self._generation), daemon=True,
                         name="ide3d-backend-reader").start()

    def _read(self, proc: subprocess.Popen, generation: int) -> None:
        for line in proc.stdout:
            if generation == self._generation:
                self._last_heard = time.monotonic()
            self._events.put(line)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self._events.put(_Died(generation, code))

    def _last_log_line(self) -> str:
        """The most telling line this worker wrote to its log: the last exception line (``XError: ...``)
        or fatal message, else the last line that is not a library warning or info message."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(getattr(self, "_log_start", 0))
                text = f.read()[-65536:].decode("utf-8", errors="replace")
        except OSError:
            return ""
        return telling_line(text)

    def _death_message(self, code: int | None) -> str:
        last = self._last_log_line()
        msg = f"the backend worker stopped unexpectedly (exit code {code}); the next action restarts it"
        return msg + (f"; last log line: {last}" if last else f"; log: {self.log_path}")

    def _on_died(self, event: _Died) -> list[Job]:
        if event.generation != self._generation:
            return []
        self._proc = None
        return self._fail_all("worker_died", self._death_message(event.returncode))

    def _write(self, line: str) -> bool:
        with self._lock:
            try:
                self._proc.stdin.write(line + "\n")
                self._proc.stdin.flush()
                return True
            except (BrokenPipeError, OSError, ValueError, AttributeError):
                return False

    def _send(self, job: Job, line: str) -> None:
        if not self.alive:
            try:
                self._start()
            except OSError as exc:
                self._fail_at_submit(job, "worker_died", f"cannot start the backend: {exc}")
                return
        if not self._write(line):
            self._fail_at_submit(job, "worker_died", self._death_message(self._proc.poll()))

    def _send_cancel(self, job_id: int) -> None:
        if self.alive:
            self._write(P.encode(P.CancelMessage(id=job_id)))

    def _stalled(self, seconds: float) -> list[Job]:
        """A silent worker cannot be trusted with the next request either: kill it (the next submit
        starts a new one) and fail the pending jobs."""
        proc, self._proc = self._proc, None
        self._generation += 1  # its death is not reported a second time
        if proc is not None:
            proc.kill()
        last = self._last_log_line()
        return self._fail_all("timed_out", f"the backend sent nothing for {seconds:.0f} s and was stopped; the "
                              "next action restarts it" + (f"; last log line: {last}" if last else ""))

    def kill(self) -> None:
        """Kill the worker process at once (tests; the next submit restarts it)."""
        if self._proc is not None:
            self._proc.kill()

    def shutdown(self, timeout: float = 3.0) -> None:
        """Ask the worker to exit, kill it if it does not, and delete the scratch folder."""
        proc, self._proc = self._proc, None
        self._generation += 1
        if proc is not None:
            try:
                proc.stdin.write(P.encode(P.ShutdownMessage()) + "\n")
                proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._active.clear()
        super().shutdown()


class InProcessClient(_ClientBase):
    """The service run synchronously in this interpreter (needs torch and ide3d_core importable)."""

    def __init__(self, settings: BackendSettings) -> None:
        super().__init__(settings)
        self._service: Any = None

    def _send(self, job: Job, line: str) -> None:
        if self._service is None:
            try:
                from ide3d_core.service.inprocess import InProcessService
            except ImportError as exc:
                self._fail_at_submit(job, "bad_request", "in-process mode needs ide3d_core and torch in "
                                     f"Blender's Python ({exc}); use the worker mode")
                return
            self._service = InProcessService(model=self.settings.model, device=self.settings.device)
        self._service.call(line, on_line=self._events.put)

    def _send_cancel(self, job_id: int) -> None:
        pass  # requests run synchronously; nothing is ever in flight


_NOISE = re.compile(r"^(\[?[IWD]\d{4} |WARNING|INFO|DEBUG|W0000|I0000|.*Warning: |.*warnings\.warn|\s+)")


def telling_line(text: str) -> str:
    """The line of a worker log that best explains a death: the last ``SomeError: message`` line of a
    traceback (or a fatal-error line), else the last line that is not library noise (TensorFlow/MediaPipe
    ``I0000``/``W0000`` lines, Python warnings, indented traceback bodies). At most 300 characters."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)(:|$)", ln) or \
                ln.startswith(("Fatal Python error", "MemoryError", "Killed", "Segmentation fault")):
            return ln[:300]
    for ln in reversed(lines):
        if not _NOISE.match(ln) and not ln.startswith(("Traceback", "  File ")):
            return ln[:300]
    return ""


def make_client(settings: BackendSettings) -> _ClientBase:
    return InProcessClient(settings) if settings.mode == "in_process" else WorkerClient(settings)


class BackendOwner:
    """Owns the add-on's one backend client; the add-on creates it in ``register()`` and calls
    :meth:`shutdown` in ``unregister()``. :meth:`client` replaces the client when settings change."""

    def __init__(self) -> None:
        self._client: _ClientBase | None = None

    def client(self, settings: BackendSettings) -> _ClientBase:
        if self._client is not None and self._client.settings != settings:
            self._client.shutdown()
            self._client = None
        if self._client is None:
            self._client = make_client(settings)
        return self._client

    @property
    def current(self) -> _ClientBase | None:
        return self._client

    @property
    def busy(self) -> bool:
        return self._client is not None and self._client.busy

    def poll(self) -> list[Job]:
        return [] if self._client is None else self._client.poll()

    def shutdown(self) -> None:
        if self._client is not None:
            self._client.shutdown()
            self._client = None
