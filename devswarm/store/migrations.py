"""Every shape a store file has had: an ordered list of named migrations.

To change the schema, append one Migration (the next version, a short unique name, frozen SQL)
and change TABLES (devswarm.store.schema) to match; that is the whole change. Never edit a
released migration: files in the field have already run it. Two changes that both append
version N conflict in this list, a test fails on duplicate versions or names, and a store
migrated by one is refused by the other (its schema_version row names the migration).

Every store is built by replaying this list from version 1, a new one included (see
devswarm.store.upgrade for why).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One step of the schema: ``statements`` take a store from ``version - 1`` to ``version``."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "run tables",
        (
            "CREATE TABLE runs (run_id VARCHAR, run_name VARCHAR, goal VARCHAR, repo_path"
            " VARCHAR, branch VARCHAR, base_commit VARCHAR, tip_commit VARCHAR, status VARCHAR,"
            " started_at TIMESTAMP, ended_at TIMESTAMP, cycles INTEGER, flow_run_id VARCHAR,"
            " config VARCHAR, recorded_at TIMESTAMP, PRIMARY KEY (run_id))",
            "CREATE TABLE cycles (run_id VARCHAR, cycle INTEGER, started_at TIMESTAMP, ended_at"
            " TIMESTAMP, tip_before VARCHAR, tip_after VARCHAR, decision VARCHAR, reasons VARCHAR,"
            " score DOUBLE, label VARCHAR, check_passed BOOLEAN, span_id VARCHAR, parent_span_id"
            " VARCHAR, recorded_at TIMESTAMP, PRIMARY KEY (run_id, cycle))",
            "CREATE TABLE agents (agent_id VARCHAR, run_id VARCHAR, cycle INTEGER, role VARCHAR,"
            " plan_path VARCHAR, task_id VARCHAR, parent_agent_id VARCHAR, request_model VARCHAR,"
            " status VARCHAR, steps INTEGER, started_at TIMESTAMP, ended_at TIMESTAMP, handoff"
            " VARCHAR, flow_run_id VARCHAR, span_id VARCHAR, parent_span_id VARCHAR, recorded_at"
            " TIMESTAMP, PRIMARY KEY (agent_id))",
            "CREATE TABLE tasks (run_id VARCHAR, task_id VARCHAR, cycle INTEGER, planner_agent_id"
            " VARCHAR, worker_agent_id VARCHAR, title VARCHAR, description VARCHAR, acceptance"
            " VARCHAR, files VARCHAR, check_command VARCHAR, depends_on VARCHAR, status VARCHAR,"
            " reason VARCHAR, attempts INTEGER, base_commit VARCHAR, commit_sha VARCHAR,"
            " started_at TIMESTAMP, ended_at TIMESTAMP, recorded_at TIMESTAMP, PRIMARY KEY"
            " (run_id, task_id))",
            "CREATE TABLE llm_calls (call_id VARCHAR, run_id VARCHAR, agent_id VARCHAR, step"
            " INTEGER, attempt INTEGER, operation_name VARCHAR, provider_name VARCHAR,"
            " request_model VARCHAR, response_model VARCHAR, response_id VARCHAR, input_tokens"
            " BIGINT, output_tokens BIGINT, cache_read_input_tokens BIGINT, cost_usd DOUBLE,"
            " finish_reasons VARCHAR, error_type VARCHAR, http_status INTEGER, started_at"
            " TIMESTAMP, ended_at TIMESTAMP, duration_ms DOUBLE, cache_key VARCHAR, span_id"
            " VARCHAR, parent_span_id VARCHAR, recorded_at TIMESTAMP, PRIMARY KEY (call_id))",
            "CREATE TABLE tool_calls (run_id VARCHAR, agent_id VARCHAR, step INTEGER,"
            " tool_call_id VARCHAR, tool_name VARCHAR, arguments VARCHAR, output_excerpt VARCHAR,"
            " error_type VARCHAR, duration_ms DOUBLE, started_at TIMESTAMP, span_id VARCHAR,"
            " parent_span_id VARCHAR, recorded_at TIMESTAMP, PRIMARY KEY (agent_id, step,"
            " tool_call_id))",
            "CREATE TABLE landings (landing_id VARCHAR, run_id VARCHAR, cycle INTEGER, task_id"
            " VARCHAR, agent_id VARCHAR, branch VARCHAR, commit_sha VARCHAR, old_tip VARCHAR,"
            " new_tip VARCHAR, status VARCHAR, cas_retries INTEGER, conflict_files VARCHAR,"
            " resolved BOOLEAN, started_at TIMESTAMP, ended_at TIMESTAMP, duration_ms DOUBLE,"
            " span_id VARCHAR, parent_span_id VARCHAR, recorded_at TIMESTAMP, PRIMARY KEY"
            " (landing_id))",
        ),
    ),
    Migration(
        2,
        "prefect history and merged stores",
        (
            "CREATE TABLE IF NOT EXISTS prefect_flow_runs (flow_run_id VARCHAR, run_id VARCHAR,"
            " name VARCHAR, flow_name VARCHAR, role VARCHAR, agent_id VARCHAR, task_id VARCHAR,"
            " cycle INTEGER, parent_flow_run_id VARCHAR, parent_task_run_id VARCHAR,"
            " state_type VARCHAR, state_name VARCHAR, run_count INTEGER, started_at TIMESTAMP,"
            " ended_at TIMESTAMP, total_run_time_s DOUBLE, created_at TIMESTAMP,"
            " deployment_id VARCHAR, work_pool_name VARCHAR, tags VARCHAR, span_id VARCHAR,"
            " parent_span_id VARCHAR, recorded_at TIMESTAMP, PRIMARY KEY (flow_run_id))",
            "CREATE TABLE IF NOT EXISTS prefect_task_runs (task_run_id VARCHAR,"
            " flow_run_id VARCHAR, run_id VARCHAR, name VARCHAR, task_name VARCHAR,"
            " agent_id VARCHAR, step INTEGER, subflow_run_id VARCHAR, state_type VARCHAR,"
            " state_name VARCHAR, run_count INTEGER, max_retries INTEGER, retries INTEGER,"
            " cache_hit BOOLEAN, cache_key VARCHAR, cache_expiration TIMESTAMP,"
            " started_at TIMESTAMP, ended_at TIMESTAMP, total_run_time_s DOUBLE,"
            " created_at TIMESTAMP, tags VARCHAR, span_id VARCHAR, parent_span_id VARCHAR,"
            " recorded_at TIMESTAMP, PRIMARY KEY (task_run_id))",
            # Bookkeeping of the warehouse (not a record kind): which run files were merged,
            # in what state.
            "CREATE TABLE IF NOT EXISTS merged_stores (source VARCHAR PRIMARY KEY,"
            " fingerprint VARCHAR, run_ids VARCHAR, row_count BIGINT, merged_at TIMESTAMP)",
        ),
    ),
    Migration(
        3,
        "one name per concept",
        (
            # A model call is a model call everywhere (it was llm_call in the store).
            "ALTER TABLE llm_calls RENAME TO model_calls",
            # task_id held the task's key (c1.root.alpha), not the planner's task id (alpha).
            "ALTER TABLE agents RENAME COLUMN task_id TO task_key",
            "ALTER TABLE tasks RENAME COLUMN task_id TO task_key",
            "ALTER TABLE landings RENAME COLUMN task_id TO task_key",
            "ALTER TABLE prefect_flow_runs RENAME COLUMN task_id TO task_key",
            # run_name was always run_id's value.
            "ALTER TABLE runs DROP COLUMN run_name",
        ),
    ),
    Migration(
        4,
        "estimated usage",
        (
            # Servers that report no usage: tokens estimated from the text, and marked so.
            "ALTER TABLE model_calls ADD COLUMN usage_estimated BOOLEAN",
        ),
    ),
    Migration(
        5,
        "sandbox per run",
        (
            # Whether agents' commands ran in the sandbox (False: the user said --no-sandbox).
            "ALTER TABLE runs ADD COLUMN sandbox BOOLEAN",
        ),
    ),
    Migration(
        6,
        "published landings",
        (
            # A landing in devswarm's clone that did not reach the user's branch says so.
            "ALTER TABLE landings ADD COLUMN published BOOLEAN",
            "ALTER TABLE landings ADD COLUMN publish_error VARCHAR",
        ),
    ),
    Migration(
        7,
        "verifications",
        (
            # The verifier (devswarm.verify): one row per tip it verified, and what each
            # landing turned out to be (green, red, culprit, reverted).
            "CREATE TABLE IF NOT EXISTS verifications (verification_id VARCHAR, run_id VARCHAR,"
            " commit_sha VARCHAR, verdict VARCHAR, started_at TIMESTAMP, ended_at TIMESTAMP,"
            " duration_ms DOUBLE, batch_size INTEGER, bisect_steps INTEGER, culprit_sha VARCHAR,"
            " culprit_task_key VARCHAR, culprit_landing_id VARCHAR, confirmed BOOLEAN,"
            " flake BOOLEAN, action VARCHAR, action_commit VARCHAR, output_excerpt VARCHAR,"
            " recorded_at TIMESTAMP, PRIMARY KEY (verification_id))",
            "ALTER TABLE landings ADD COLUMN verified VARCHAR",
        ),
    ),
)


SCHEMA_VERSION = MIGRATIONS[-1].version
