"""The cycle's scheduler on its own: dependencies, streaming, follow-ups, crashes, drains."""

from __future__ import annotations

import sys
import threading
import time
from functools import partial

from devswarm.scheduler import Scheduler, WorkerCrashed
from devswarm.schemas import PlannedTask, TaskSpec, WorkerReport


def planned(id: str, depends_on: list[str] | None = None) -> PlannedTask:
    return PlannedTask(
        spec=TaskSpec(id=id, title=id, description=id),
        key=id,
        cycle=1,
        plan_path="root",
        planner_agent_id="planner",
        base_commit="base",
        depends_on=depends_on or [],
    )


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add(self, kind: str, key: str) -> None:
        with self.lock:
            self.events.append((kind, key))


def scheduler(
    rec: Recorder, work, *, followup=None, stop=lambda: None, max_workers=4, **kw
) -> Scheduler:
    return Scheduler(
        work=work,
        followup=followup,
        should_stop=stop,
        tip=lambda: "tip",
        on_report=lambda t, r: rec.add("report", t.key),
        on_skip=lambda t, reason: rec.add("skip", t.key),
        max_workers=max_workers,
        **kw,
    )


def landed(task: PlannedTask, attempt: int) -> WorkerReport:
    return WorkerReport(task_key=task.key, agent_id=f"w-{task.key}-{attempt}", status="landed")


def test_dependants_start_after_their_dependency_landed_from_the_new_tip() -> None:
    rec, bases = Recorder(), {}

    def work(task, attempt):
        bases[task.key] = task.base_commit
        rec.add("start", task.key)
        time.sleep(0.05)
        return landed(task, attempt)

    reports = scheduler(rec, work).run([planned("b", ["a"]), planned("a")])
    assert [r.status for r in reports] == ["landed", "landed"]
    assert rec.events.index(("report", "a")) < rec.events.index(("start", "b"))
    assert bases == {"a": "base", "b": "tip"}


def test_a_failed_dependency_skips_the_whole_chain() -> None:
    rec = Recorder()

    def work(task, attempt):
        status = "failed" if task.key == "a" else "landed"
        return WorkerReport(task_key=task.key, agent_id="w", status=status)

    reports = {
        r.task_key: r
        for r in scheduler(rec, work).run([planned("a"), planned("b", ["a"]), planned("c", ["b"])])
    }
    assert reports["a"].status == "failed"
    assert reports["b"].status == reports["c"].status == "skipped"
    assert "a did not land" in reports["b"].reason


def test_reports_stream_while_a_slow_worker_still_runs() -> None:
    rec = Recorder()
    release = threading.Event()

    def work(task, attempt):
        if task.key == "slow":
            release.wait(5)
        return landed(task, attempt)

    def followup(task, report):
        rec.add("followup", task.key)
        release.set()  # the slow worker only ends after the fast one's follow-up ran
        return [planned("extra")]

    def work_with_concern(task, attempt):
        r = work(task, attempt)
        if task.key == "fast":
            r.handoff = "done\nConcerns: more to do"
        return r

    reports = scheduler(rec, work_with_concern, followup=followup).run(
        [planned("slow"), planned("fast")]
    )
    assert sorted(r.task_key for r in reports) == ["extra", "fast", "slow"]
    assert rec.events.index(("followup", "fast")) < rec.events.index(("report", "slow"))


def test_a_crashed_worker_is_resubmitted_once_then_reported() -> None:
    rec, attempts = Recorder(), []

    def work(task, attempt):
        attempts.append((task.key, attempt))
        if task.key == "flaky" and attempt == 1 or task.key == "broken":
            raise WorkerCrashed("subflow crashed")
        return landed(task, attempt)

    reports = {
        r.task_key: r for r in scheduler(rec, work).run([planned("flaky"), planned("broken")])
    }
    assert reports["flaky"].status == "landed" and ("flaky", 2) in attempts
    assert reports["broken"].status == "crashed" and attempts.count(("broken", 2)) == 1


def test_a_worker_that_raised_is_reported_not_resubmitted_its_flow_retries_ran_it_again() -> None:
    rec, attempts = Recorder(), []

    def work(task, attempt):
        attempts.append(attempt)
        raise RuntimeError("raised twice: the flow's run and its Prefect retry")

    reports = scheduler(rec, work).run([planned("raises")])
    assert attempts == [1]
    assert reports[0].status == "crashed" and "raised twice" in reports[0].reason


class Killed(BaseException):
    """A worker's thread killed in-process: Prefect marks its subflow Crashed, no retry."""


def test_a_worker_killed_in_process_is_resubmitted_once() -> None:
    rec, attempts = Recorder(), []

    def work(task, attempt):
        attempts.append(attempt)
        if attempt == 1:
            raise Killed()
        return landed(task, attempt)

    reports = scheduler(rec, work).run([planned("victim")])
    assert attempts == [1, 2] and reports[0].status == "landed"


def test_a_crashed_worker_whose_commit_reached_the_branch_is_not_run_again() -> None:
    rec, attempts, branch = Recorder(), [], set()

    def work(task, attempt):
        attempts.append(attempt)
        branch.add(task.key)  # landed, then its process died before it reported
        raise WorkerCrashed("the worker's process died")

    reports = scheduler(rec, work, on_branch=lambda: set(branch)).run([planned("a")])
    assert attempts == [1]
    assert reports[0].status == "landed" and "crashed" in reports[0].reason


def test_a_drain_skips_what_has_not_started_and_respects_the_worker_bound() -> None:
    rec, running, peak = Recorder(), [0], [0]
    lock = threading.Lock()
    stop = threading.Event()

    def work(task, attempt):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        stop.set()
        with lock:
            running[0] -= 1
        return landed(task, attempt)

    tasks = [planned(f"t{i}") for i in range(8)]
    reports = scheduler(
        rec, work, stop=lambda: "stop requested" if stop.is_set() else None, max_workers=2
    ).run(tasks)
    statuses = [r.status for r in reports]
    assert peak[0] <= 2
    assert statuses.count("landed") == 2 and statuses.count("skipped") == 6


def test_tasks_landed_before_a_resume_are_not_redone() -> None:
    rec, started = Recorder(), []

    def work(task, attempt):
        started.append(task.key)
        return landed(task, attempt)

    reports = {
        r.task_key: r
        for r in scheduler(rec, work, landed={"a"}).run([planned("a"), planned("b", ["a"])])
    }
    assert started == ["b"]
    assert reports["a"].status == "landed"


def test_a_planners_tasks_start_while_the_planners_after_it_still_plan() -> None:
    rec = Recorder()
    root_started = threading.Event()
    sched: Scheduler

    def work(task, attempt):
        rec.add("start", task.key)
        if task.key == "root-a":
            root_started.set()
        return landed(task, attempt)

    def plan_tree():
        sched.add([planned("root-a"), planned("root-b", ["root-a"])])
        rec.add("sub-planner starts", "sub")
        assert root_started.wait(5)  # the sub-planner is still planning: no barrier
        rec.add("sub-planner returns", "sub")
        sched.add([planned("sub-a")])
        return ["root-a", "root-b", "sub-a"]

    sched = scheduler(rec, work)
    reports = {r.task_key: r.status for r in sched.run(producers=[plan_tree])}
    assert reports == {"root-a": "landed", "root-b": "landed", "sub-a": "landed"}
    ev = rec.events
    assert ev.index(("start", "root-a")) < ev.index(("sub-planner returns", "sub"))
    assert ev.index(("report", "root-a")) < ev.index(("start", "root-b"))


def test_a_cycle_never_ends_before_its_planners_ran() -> None:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: the producer may start after the loop looks
    try:
        for i in range(200):
            sched = scheduler(Recorder(), landed)
            task = planned(f"t{i}")
            reports = sched.run(producers=[partial(time.sleep, 0), partial(sched.add, [task])])
            assert [r.task_key for r in reports] == [task.key]
    finally:
        sys.setswitchinterval(interval)


def test_tasks_added_from_many_threads_each_run_once_while_the_cycle_is_held() -> None:
    rec = Recorder()
    sched: Scheduler

    def work(task, attempt):
        rec.add("start", task.key)
        return landed(task, attempt)

    def verifier():  # finds work while the cycle runs, from threads of its own
        with sched.hold():
            holding.set()
            threads = [
                threading.Thread(target=sched.add, args=([planned(f"t{i}-{j}") for j in range(5)],))
                for i in range(8)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    sched, holding = scheduler(rec, work, max_workers=3), threading.Event()
    holder = threading.Thread(target=verifier)
    reports: list[WorkerReport] = []
    runner = threading.Thread(target=lambda: reports.extend(sched.run()))
    with sched.hold():  # until the verifier holds it: the cycle cannot end before its adds
        runner.start()
        holder.start()
        assert holding.wait(5)
    holder.join(10)
    runner.join(10)
    assert not runner.is_alive()
    started = [key for kind, key in rec.events if kind == "start"]
    assert sorted(started) == sorted(f"t{i}-{j}" for i in range(8) for j in range(5))
    assert len(reports) == 40


def test_a_planner_that_raises_fails_the_cycle_after_its_started_tasks_settle() -> None:
    rec = Recorder()
    sched: Scheduler

    def work(task, attempt):
        time.sleep(0.1)
        return landed(task, attempt)

    def plan_tree():
        sched.add([planned("a")])
        raise RuntimeError("the sub-planner's flow failed")

    sched = scheduler(rec, work)
    try:
        sched.run(producers=[plan_tree])
    except RuntimeError as exc:
        assert "sub-planner" in str(exc)
    else:
        raise AssertionError("the planner's failure was lost")
    assert rec.events == [("report", "a")]


def test_start_gate_lets_a_few_subflows_start_at_once_and_opens_on_failure() -> None:
    from tasks.subflows import StartGate

    gate = StartGate(2)
    lock = threading.Lock()
    starting, peak, bodies = 0, 0, []

    def subflow(i: int) -> None:
        nonlocal starting, peak
        with gate.starting():
            with lock:
                starting += 1
                peak = max(peak, starting)
            time.sleep(0.05)  # Prefect's start
            with lock:
                starting -= 1
            if i % 3 == 0:
                raise RuntimeError("the subflow failed to start")  # never reaches its body
            gate.started()  # the body: the next one may start
            gate.started()  # a second call is harmless
            time.sleep(0.2)  # the body's work does not hold the gate
            bodies.append(i)

    def call(i: int) -> None:
        try:
            subflow(i)
        except RuntimeError:
            pass

    t0 = time.monotonic()
    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak == 2  # never more than 2 starting, though 12 were called together
    assert sorted(bodies) == [i for i in range(12) if i % 3]
    assert (
        time.monotonic() - t0 < 1.5
    )  # bodies overlap: 6 × 0.05 s of starts + 0.2 s, not 12 × 0.25


# -- tasks added to a running cycle (the verifier's retries and repairs) ----------------------


def test_a_retry_runs_as_the_next_attempt_after_its_last_attempt_reported() -> None:
    """A landing reverted while its worker still writes its report: the retry waits for that
    report, then runs as attempt 2 and its report replaces the first."""
    rec, started = Recorder(), []
    sched: Scheduler

    def work(task, attempt):
        started.append((task.key, attempt))
        if attempt == 1 and task.key == "a":
            sched.retry(task)  # posted before this attempt has returned its report
            time.sleep(0.1)
        return landed(task, attempt)

    sched = scheduler(rec, work)
    reports = {r.task_key: r for r in sched.run([planned("a"), planned("b", ["a"])])}
    assert started.count(("a", 1)) == 1 and ("a", 2) in started
    assert reports["a"].agent_id == "w-a-2" and sched.attempts["a"] == 2
    assert sched.settled("a")


def test_settle_is_waited_for_and_what_it_adds_runs_in_the_cycle() -> None:
    rec, calls = Recorder(), []
    sched: Scheduler

    def settle() -> None:
        calls.append(len(calls))
        if len(calls) == 1:  # the verifier found a culprit: a repair task for its planner
            sched.add([planned("repair-a")], first=True)

    sched = scheduler(rec, landed, settle=settle)
    reports = {r.task_key: r.status for r in sched.run([planned("a")])}
    assert reports == {"a": "landed", "repair-a": "landed"}
    assert len(calls) == 2 and sched.task("repair-a") is not None


def test_an_unlanded_task_skips_its_dependants_that_have_not_started() -> None:
    rec = Recorder()
    sched: Scheduler
    go = threading.Event()

    def work(task, attempt):
        if task.key == "slow":
            go.wait(5)
        return landed(task, attempt)

    def settle() -> None:
        return None

    sched = scheduler(rec, work, settle=settle)

    def revert_then_release() -> None:
        while "a" not in sched.landed:
            time.sleep(0.01)
        sched.unland("a")
        time.sleep(0.1)
        go.set()

    threading.Thread(target=revert_then_release, daemon=True).start()
    reports = {
        r.task_key: r
        for r in sched.run([planned("a"), planned("slow"), planned("b", ["a", "slow"])])
    }
    assert reports["a"].status == "reverted" and reports["b"].status == "skipped"


def test_a_task_given_back_starts_before_the_tasks_still_waiting() -> None:
    rec, started = Recorder(), []
    sched: Scheduler

    def work(task, attempt):
        started.append(task.key)
        if task.key == "a":
            sched.add([planned("repair-a")], first=True)
            time.sleep(0.05)
        return landed(task, attempt)

    sched = scheduler(rec, work, max_workers=1)
    sched.run([planned("a"), planned("b"), planned("c")])
    assert started == ["a", "repair-a", "b", "c"]
