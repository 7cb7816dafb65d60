"""Sync and control opcodes. Semaphores are monotonic 32-bit counters: `sync.signal` adds 1 when
every earlier instruction of its unit queue has finished; `sync.wait` stalls its unit queue until
the counter is >= value. Local semaphores (l0..) belong to one core, global ones (g0..) to the
chip. The scheduler (cycles.py) implements the ordering; run() has no data effect.
"""

from __future__ import annotations

from s4c.s4.ops_common import Cost

GLOBAL_BIT = 0x8000


def sem_parts(sem: int) -> tuple[bool, int]:
    """(is_global, index) of an encoded semaphore operand."""
    return bool(sem & GLOBAL_BIT), sem & ~GLOBAL_BIT


def _check_sem(a, m):
    is_global, index = sem_parts(a["sem"])
    limit = m["sync.global_sems"] if is_global else m["sync.local_sems"]
    if index >= limit:
        return f"semaphore {'g' if is_global else 'l'}{index} out of range (machine has {limit})"
    return None


def _no_access(a):
    return []


def _nothing(ctx, a):
    return None


def signal_cost(a, m):
    return Cost(m["sync.signal_cycles"], 0, 0)


def wait_cost(a, m):
    return Cost(m["sync.wait_cycles"], 0, 0)


def end_cost(a, m):
    return Cost(0, 0, 0)


def end_check(a, m):
    return None


SIGNAL = {"check": _check_sem, "access": _no_access, "cost": signal_cost, "run": _nothing}
WAIT = {"check": _check_sem, "access": _no_access, "cost": wait_cost, "run": _nothing}
END = {"check": end_check, "access": _no_access, "cost": end_cost, "run": _nothing}
