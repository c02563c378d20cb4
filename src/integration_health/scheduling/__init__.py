"""Scheduling: the pure planner, the in-process scheduler, and distributed workers."""

from .planner import Candidate, Plan, PlannedCheck, plan_checks, rate_limit_switch
from .scheduler import BufferState, PassReport, Scheduler, SchedulerOptions, default_worker_id

__all__ = [
    "BufferState",
    "Candidate",
    "PassReport",
    "Plan",
    "PlannedCheck",
    "Scheduler",
    "SchedulerOptions",
    "default_worker_id",
    "plan_checks",
    "rate_limit_switch",
]
