"""The verifier: a thread beside the landing lane that keeps the branch tip green.

After landings it runs the repository check on the newest tip (one check covers the batch of
landings since the last check, cached per commit). Green: that tip is the last green tip (kept
in the run's state). Red: it bisects the landings since the last green tip with parallel probes
(devswarm.verify.bisect), confirms the first bad one — the culprit — by checking it a second
time (a flaky check that passes then is recorded as a flake and nothing is reverted), and acts
on it at once (devswarm.verify.culprits): a revert through the lane and the task back to the
cycle, or a repair task for its planner. It never holds the lane while a check runs, and no
agent ever waits on it: workers keep landing while it works.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from devswarm.records import now
from devswarm.verify.bisect import first_bad
from devswarm.verify.culprits import Culprits
from devswarm.verify.landings import landings_since
from devswarm.verify.rows import VerifierRows
from devswarm.verify.suspects import Suspects

if TYPE_CHECKING:
    from devswarm.run.run import Run
    from devswarm.scheduler import Scheduler

_log = logging.getLogger("devswarm")
MAX_FLAKES_PER_TIP = 2  # after that many flakes in a row a red tip waits for the next landing


class Verifier:
    """Checks the tip after landings, bisects a red one, and acts on its culprit."""

    def __init__(self, run: Run, *, poll_seconds: float = 2.0, width: int | None = None) -> None:
        self.run, self.ws, self.checks = run, run.workspace, run.checks
        self.check = run.config.check or ""
        self.rows = VerifierRows(run)
        self.poll_seconds = poll_seconds
        # Bisection probes at once: a small pool, as many as the cores allow (up to 4).
        self.width = width or max(1, min(4, os.cpu_count() or 1))
        self._cond = threading.Condition()
        self._dirty = True  # something landed since the last verification
        self._busy = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.verified: str | None = None  # the tip last verified
        self.landing_ids: dict[str, str] = {}  # a landing's last commit -> its landing id
        self.findings: dict[str, str] = {}  # a landing's last commit -> green/red/culprit/...
        self.culprits = Culprits(run, self.rows, self._mark, self.landing_ids.__setitem__)
        self.flakes: Counter[str] = Counter()  # tip -> flakes seen verifying it
        self.red_since: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Verifier:
        # In the caller's context: what it sends (events, logs) goes where the caller's would.
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(target=ctx.run, args=(self._loop,), name="verifier",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def serve(self, scheduler: Scheduler | None) -> None:
        """The cycle whose scheduler takes the tasks given back (None between cycles)."""
        self.culprits.scheduler = scheduler

    # -- what others tell it -----------------------------------------------------------------

    def landed(self, landing_id: str, commit: str | None) -> None:
        """A landing of this process reached the branch (its new tip `commit`)."""
        with self._cond:
            if commit:
                self.landing_ids[commit] = landing_id
                if commit in self.findings:  # verified before this word arrived
                    self.rows.verified({landing_id: self.findings[commit]})
            self._dirty = True
            self._cond.notify_all()

    def task_ended(self, key: str, status: str, commit: str | None = None) -> None:
        """A task's report arrived (`commit`: what it landed as): a fix in flight that did not
        land frees its culprit."""
        with self._cond:
            landed = status == "landed"
            if self.culprits.ended(key, commit if landed else None) and not landed:
                self.verified, self._dirty = None, True  # act on that culprit again
                self._cond.notify_all()

    def settle(self, timeout: float | None = None) -> None:
        """Wait until the current tip is verified and acted on (the cycle's end waits, so what
        the verifier gives back still runs in the cycle); at once when the run stops."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._idle():
                if deadline is not None and time.monotonic() > deadline:
                    return
                self._cond.wait(0.25)

    def _idle(self) -> bool:
        if self._stopped or self._thread is None or not self._thread.is_alive():
            return True
        if self.run.should_stop():
            return True
        return not self._busy and not self._dirty and self.verified == self.ws.tip()

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._dirty:
                    self._cond.wait(self.poll_seconds)
                    if self.ws.tip() != self.verified:  # another process may have landed
                        self._dirty = True
                if self._stopped:
                    return
                self._dirty, self._busy = False, True
            tip = self.ws.tip()
            try:
                self.verify(tip)
            except Exception as exc:  # the verifier must never take the run down
                _log.warning("verifier: %s", exc, exc_info=True)
                self.run.progress.emit(f"verifier: could not verify {tip[:10]}: {exc}")
                self.verified = tip
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def verify(self, tip: str) -> None:
        """Verify `tip`: check it; if red, bisect, confirm and act."""
        if tip == self.verified:
            return
        started, t0 = now(), time.perf_counter()
        green = self.run.state.last_green
        units = landings_since(self.ws, green, tip) if green and green != tip else []
        self.run.progress.set_tip(f"checking {tip[:10]} ({len(units)} landings)")
        result = self.checks.at(tip)
        if result is None:  # no repository check: nothing to verify
            self.verified = tip
            return
        if result.passed:
            self._green(tip, Suspects(self.ws.clone, units))
            self.rows.verification(
                tip, started, _ms(t0), verdict="green", batch_size=len(units), bisect_steps=0
            )
            self.verified = tip
            return
        if not units:  # red, and no green tip to bisect from (the suite is red from the start)
            self.run.progress.set_tip("red (no green tip yet)")
            self.rows.verification(
                tip, started, _ms(t0), verdict="red", batch_size=0, bisect_steps=0,
                action="none: no green tip to bisect from", output=result.output,
            )  # fmt: skip
            self.verified = tip
            return
        self.run.progress.set_tip(f"red: bisecting {len(units)} landings")
        suspects = Suspects(self.ws.clone, units)
        with ThreadPoolExecutor(1, thread_name_prefix="confirm") as spare:
            # The tip once more while bisecting: the confirmation when the tip is the culprit
            # (most batches are small), and a flake is seen without waiting for the bisection.
            tip_again = spare.submit(self.checks.at, tip, fresh=True)
            index, steps = first_bad(len(suspects), self._green_at(suspects), self.width)
            rerun = tip_again.result()
        culprit = suspects.landing(index)
        if (
            rerun is not None and rerun.passed or suspects.probe(index) == tip
        ):  # a flaky check fails; it never passes by luck
            again = rerun
        else:  # the culprit red a second time (its parent green: bisection found it so)
            again = self.checks.at(suspects.probe(index), fresh=True)
        found = {
            "batch_size": len(units),
            "bisect_steps": steps,
            "culprit_sha": culprit.last,
            "culprit_task_key": culprit.task,
            "culprit_landing_id": self.landing_ids.get(culprit.last),
        }
        if again is not None and again.passed:
            self._flake(tip, suspects, index, started, t0, found, result.output)
            return
        self._found(suspects, suspects.indices[index])
        if self.red_since is None:
            self.red_since = time.monotonic()
            self.run.progress.notify(
                "tip.turned-red", commit=tip, culprit=culprit.last, task=culprit.task
            )
        action, moved = self.culprits.act(culprit, (again or result).output, tip)
        self.rows.verification(
            tip, started, _ms(t0), verdict="red", confirmed=True, flake=False, action=action,
            action_commit=moved, output=(again or result).output, **found,
        )  # fmt: skip
        self.run.progress.emit(
            f"verifier: tip {tip[:10]} red; culprit {culprit.last[:10]} (task {culprit.task},"
            f" found in {steps} checks over {len(units)} landings): {action}"
        )
        with self._cond:
            self.verified = None if moved else tip
            self._dirty = self._dirty or moved is not None

    def _green_at(self, suspects: Suspects):
        def green(k: int) -> bool:
            res = self.checks.at(suspects.probe(k))
            return res is None or res.passed

        return green

    # -- findings ----------------------------------------------------------------------------

    def _green(self, tip: str, suspects: Suspects) -> None:
        self.run.state.last_green = tip
        self.run.save_state()
        self._mark(self._tips(suspects, range(len(suspects.units))))
        self.run.progress.set_tip(f"green at {tip[:10]}")
        if self.red_since is not None:
            red_seconds = round(time.monotonic() - self.red_since, 1)
            self.run.progress.emit(
                f"verifier: tip green again at {tip[:10]} after {red_seconds:.0f} s"
            )
            self.run.progress.notify("tip.turned-green", commit=tip, red_seconds=red_seconds)
            self.red_since = None

    def _found(self, suspects: Suspects, index: int) -> None:
        """Before the culprit green (but where an earlier culprit was still on the branch), the
        culprit itself, after it red (it is on the tip)."""
        units = suspects.units
        verdicts = self._tips(suspects, range(index))
        verdicts[units[index].last] = "culprit"
        verdicts |= {u.last: "red" for u in units[index + 1 :]}
        self._mark(verdicts)
        self.run.progress.set_tip(f"red since task {units[index].task}")

    def _tips(self, suspects: Suspects, indices: range) -> dict[str, str]:
        """What the landings not judged yet were as tips: green, or red while an earlier
        culprit was still on the branch."""
        return {
            suspects.units[i].last: "red" if suspects.shadowed(i) else "green"
            for i in indices
            if suspects.units[i].last not in self.findings
        }

    def _mark(self, verdicts: dict[str, str]) -> None:
        self.findings.update(verdicts)
        self.rows.verified(
            {self.landing_ids[c]: v for c, v in verdicts.items() if c in self.landing_ids}
        )
        self.rows.flush()

    def _flake(
        self,
        tip: str,
        suspects: Suspects,
        index: int,
        started: str,
        t0: float,
        found: dict,
        output: str,
    ) -> None:
        """The culprit passed its second check: the red was a flake; check the range anew."""
        culprit = suspects.landing(index)
        reds = [
            p for p in [*suspects.probed(), tip] if (r := self.checks.known(p)) and not r.passed
        ]
        self.checks.forget([c for c in reds if c != suspects.probe(index)])
        self.flakes[tip] += 1
        self.rows.verification(
            tip, started, _ms(t0), verdict="flake", confirmed=False, flake=True,
            action="none: the check is flaky (the culprit passed its second check)",
            output=output, **found,
        )  # fmt: skip
        self.run.progress.emit(
            f"verifier: flaky check at {tip[:10]}: {culprit.last[:10]} failed, then passed;"
            " nothing reverted"
        )
        with self._cond:
            again = self.flakes[tip] <= MAX_FLAKES_PER_TIP
            self.verified = None if again else tip
            self._dirty = self._dirty or again


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
