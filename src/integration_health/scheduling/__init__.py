"""Scheduling: the pure planner, the in-process scheduler, and distributed workers."""

from .holds import VendorHold, find_vendor_holds, vendor_holds
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
    "VendorHold",
    "default_worker_id",
    "find_vendor_holds",
    "plan_checks",
    "rate_limit_switch",
    "vendor_holds",
]
