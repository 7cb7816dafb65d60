"""codegen/memory_plan.py: liveness-based static arena placement."""

import numpy as np
import pytest

from s4c.codegen.memory_plan import Interval, align_up, graph_intervals, plan_arena, plan_graph
from s4c.ir import Graph, Op, TensorType, Value


def test_disjoint_lifetimes_share_memory():
    plan = plan_arena([Interval("a", 1000, 0, 1), Interval("b", 1000, 2, 3), Interval("c", 1000, 4, 5)])
    plan.check()
    assert plan.peak == align_up(1000, 64)
    assert plan.total == 3 * align_up(1000, 64)
    assert len(set(plan.offsets.values())) == 1


def test_overlapping_lifetimes_do_not():
    plan = plan_arena([Interval("a", 100, 0, 2), Interval("b", 100, 1, 3), Interval("c", 100, 2, 2)])
    plan.check()
    assert plan.peak == plan.total == 3 * 128
    assert plan.lower_bound == 3 * 128


def test_a_buffer_read_by_the_step_that_writes_the_next_is_not_reused():
    # b is written at step 1 while a is read there: they must not share bytes (no in-place)
    plan = plan_arena([Interval("a", 64, 0, 1), Interval("b", 64, 1, 2)])
    assert plan.offsets["a"] != plan.offsets["b"]


def test_alignment_and_determinism():
    ivs = [Interval(k, s, a, b) for k, s, a, b in [("x", 10, 0, 4), ("y", 3000, 1, 2), ("z", 70, 3, 6), ("w", 5, 5, 6)]]
    p1, p2 = plan_arena(ivs, alignment=32), plan_arena(list(ivs), alignment=32)
    assert p1.offsets == p2.offsets
    assert all(off % 32 == 0 for off in p1.offsets.values())
    p1.check()


def test_zero_sized_buffers_and_errors():
    plan = plan_arena([Interval("e", 0, 0, 9), Interval("f", 8, 0, 9)])
    plan.check()
    assert plan.peak == 64
    with pytest.raises(ValueError):
        plan_arena([Interval("a", 1, 0, 0), Interval("a", 1, 1, 1)])
    with pytest.raises(ValueError):
        Interval("a", 1, 3, 2)
    with pytest.raises(ValueError):
        plan_arena([], alignment=48)


@pytest.mark.parametrize("seed", range(20))
def test_random_plans_are_valid_and_near_the_bound(seed):
    rng = np.random.default_rng(seed)
    ivs = []
    for i in range(int(rng.integers(1, 60))):
        start = int(rng.integers(0, 40))
        ivs.append(Interval(i, int(rng.integers(1, 5000)), start, start + int(rng.integers(0, 8))))
    plan = plan_arena(ivs)
    plan.check()
    assert plan.lower_bound <= plan.peak <= plan.total
    assert plan.peak <= 2 * plan.lower_bound  # greedy-by-size stays well within 2x on these


def _chain_graph(n=6, width=1024):
    x = Value("x", TensorType("f32", (width,)))
    ops, cur = [], x
    for i in range(n):
        y = Value(f"v{i}", TensorType("f32", (width,)))
        ops.append(Op("Relu", [cur], [y]))
        cur = y
    return Graph("g", [x], [cur], ops)


def test_graph_chain_needs_two_buffers():
    g = _chain_graph()
    plan = plan_graph(g)
    plan.check()
    assert plan.total == 6 * 4096 and plan.peak == 2 * 4096


def test_graph_outputs_live_to_the_end_and_aliases_merge():
    g = _chain_graph(4)
    g.outputs = [g.ops[0].outputs[0], g.ops[-1].outputs[0]]  # v0 is an output: live to the last op
    ivs = {iv.key: iv for iv in graph_intervals(g)}
    v0 = g.ops[0].outputs[0]
    assert ivs[id(v0)].end == len(g.ops) - 1
    # v2 stored in v1's bytes (an in-place view): one interval covering both
    v1, v2 = g.ops[1].outputs[0], g.ops[2].outputs[0]
    ivs = {iv.key: iv for iv in graph_intervals(g, aliases={id(v2): v1})}
    assert id(v2) not in ivs and (ivs[id(v1)].start, ivs[id(v1)].end) == (1, 3)
