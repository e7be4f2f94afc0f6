-- The branch tip's health per run, from what each landing turned out to be (landings.verified,
-- written by the verifier): the share of wall time the tip was green (from the first landing to
-- the run's end), breaks (a red tip right after a green one, or a red first landing) per 100
-- landings, and the mean time and landings from a break to the next green tip. A landing the
-- verifier never judged (verified NULL) counts in neither the green nor the red time.
WITH tips AS (
    SELECT run_id, ended_at AS landed_at, landing_id,
        starts_with(coalesce(agent_id, ''), 'verifier/') AS is_revert,
        CASE WHEN verified = 'green' THEN 'green'
             WHEN verified IN ('red', 'culprit', 'reverted') THEN 'red' END AS state
    FROM landings
    WHERE status = 'landed' AND ended_at IS NOT NULL AND new_tip IS DISTINCT FROM old_tip
), judged AS (
    -- The state before each judged landing: the last judged one before it (unjudged ones
    -- in between are skipped, so they neither make nor hide a break).
    SELECT landing_id, lag(state) OVER (PARTITION BY run_id ORDER BY landed_at, landing_id)
        AS state_before
    FROM tips WHERE state IS NOT NULL
), ordered AS (
    SELECT t.*, j.state_before,
        lead(t.landed_at) OVER w AS next_at,
        row_number() OVER w AS n
    FROM tips t LEFT JOIN judged j USING (landing_id)
    WINDOW w AS (PARTITION BY t.run_id ORDER BY t.landed_at, t.landing_id)
), ends AS (
    SELECT run_id, max(ended_at) AS end_at FROM (
        SELECT run_id, ended_at FROM runs
        UNION ALL SELECT run_id, ended_at FROM verifications
    ) GROUP BY run_id
), spans AS (
    SELECT o.*,
        date_diff('microsecond', o.landed_at, greatest(coalesce(o.next_at, e.end_at, o.landed_at), o.landed_at))
            / 1e6 AS seconds,
        coalesce(o.state = 'red' AND coalesce(o.state_before, 'green') = 'green', false)
            AS is_break
    FROM ordered o LEFT JOIN ends e USING (run_id)
), recoveries AS (
    SELECT b.run_id, b.landed_at,
        min(g.landed_at) AS green_at,
        arg_min(g.n, g.landed_at) - b.n AS landings_to_green
    FROM spans b LEFT JOIN spans g
        ON g.run_id = b.run_id AND g.landed_at > b.landed_at AND g.state = 'green'
    WHERE b.is_break GROUP BY b.run_id, b.landed_at, b.n
), per_run AS (
    SELECT run_id,
        count(*) FILTER (WHERE NOT is_revert)::BIGINT AS landings,
        count(*) FILTER (WHERE is_revert)::BIGINT AS reverts,
        count(*) FILTER (WHERE state IS NOT NULL)::BIGINT AS verified_landings,
        sum(seconds) FILTER (WHERE state = 'green') AS green_seconds,
        sum(seconds) FILTER (WHERE state IS NOT NULL) AS verified_seconds,
        count(*) FILTER (WHERE is_break)::BIGINT AS breaks
    FROM spans GROUP BY run_id
)
SELECT p.run_id, p.landings, p.reverts, p.verified_landings,
    coalesce(p.green_seconds, 0) / nullif(p.verified_seconds, 0) AS green_share,
    p.breaks,
    100.0 * p.breaks / nullif(p.landings, 0) AS breaks_per_100_landings,
    (SELECT avg(date_diff('microsecond', r.landed_at, r.green_at) / 1e6) FROM recoveries r
        WHERE r.run_id = p.run_id) AS mean_seconds_to_green,
    (SELECT avg(r.landings_to_green) FROM recoveries r WHERE r.run_id = p.run_id)
        AS mean_landings_to_green,
    (SELECT count(*) FROM recoveries r WHERE r.run_id = p.run_id AND r.green_at IS NULL)::BIGINT
        AS breaks_still_red,
    (SELECT count(*) FROM verifications v WHERE v.run_id = p.run_id AND v.flake)::BIGINT
        AS flakes
FROM per_run p
