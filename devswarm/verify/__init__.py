"""The verifier: a tip that stays green at full landing speed (docs in README, "How the
verifier works").

    verifier.py  Verifier: a thread per run beside the landing lane; checks the newest tip after
                 landings, bisects a red one, confirms the culprit, acts on it during the cycle
    bisect.py    first_bad: bisection with parallel probes
    landings.py  Landing: the landings on the branch, from git; net_landed (reverts net out)
    culprits.py  Culprits: acting on a culprit (revert or repair), within --max-repairs
    actions.py   what a culprit gets: a revert's message, the retried task, a repair task
    suspects.py  Suspects: the landings a red tip is blamed on, earlier culprits undone
    gate.py      repository_gate: a worker's change checked before it goes to the lane, against
                 the last green tip while the tip is red
    queue.py     MergeQueue: strict mode, candidates checked before they land, stacked
    rows.py      VerifierRows: verifications, landings.verified, reverted tasks, revert landings
"""
