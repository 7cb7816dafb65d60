"""The list scheduler and the synchronisation the ISA defines.

    streams, est = schedule(nodes, preds, machine, cores)   # per-core Instr lists (with sync + end)

1. **List scheduling.** Every instruction is a node on its unit queue (core x {dma, spu, vpu}) with
   its cycle cost from the opcode table (the cycle model's own cost functions) and its dependencies
   (deps.py). A discrete-event simulation fills the queues: whenever a unit is free, it takes the
   oldest (in program order) of its instructions whose dependencies are satisfied, looking at most
   `window` instructions ahead of its oldest unscheduled one; if none is ready it idles until the
   earliest one is. So a DMA queue runs ahead to load the next weight tiles while the SPU is still
   on the current ones, as far as the SRAM buffers (whose reuse shows up as dependencies) allow.
   A dependency across units costs what the sync costs (signal, semaphore latency, wait).

2. **Sync insertion.** Each queue keeps its scheduled order. A dependency between two units of a
   core becomes `sync.signal` on the producer's queue right after the producer and `sync.wait`
   for that signal's count on the consumer's queue right before the consumer, one local semaphore
   per (producer unit, consumer unit) pair; between cores (always DMA to DMA, through DRAM) one
   global semaphore per (producer core, consumer core). A wait already covered by an earlier wait
   of the same queue is dropped. Since every queue order follows the simulated start times and
   every dependency goes forward in that time, no wait can depend on a later wait: no deadlock.
"""

from __future__ import annotations

import functools
import heapq

from s4c.s4 import isa, make
from s4c.s4.isa import SIGNAL, WAIT, Instr
from s4c.s4.ops_sync import GLOBAL_BIT as GLOBAL

from .base import UNIT_INDEX as _U
_LOCAL_PAIRS = [(a, b) for a in range(3) for b in range(3) if a != b]


def schedule(nodes, preds, machine, cores: int, window: int = 256, rank=None, debug: dict | None = None):
    n = len(nodes)
    m = machine
    queue = [0] * n
    cost = [0] * n
    for i, (core, ins) in enumerate(nodes):
        queue[i] = core * 3 + _U[ins.unit()]
        cost[i] = ins.spec.cost(ins.fields(), m).cycles
    succs: list[list[int]] = [[] for _ in range(n)]
    remaining = [0] * n
    for i, ps in enumerate(preds):
        remaining[i] = len(ps)
        for p in ps:
            succs[p].append(i)
    local = m["sync.signal_cycles"] + m["sync.local_latency"] + m["sync.wait_cycles"]
    glob = m["sync.signal_cycles"] + m["sync.global_latency"] + m["sync.wait_cycles"]

    # priority: the longest path (cycles) from a node to the end of the program ("bottom level"):
    # among ready instructions a unit runs the one the most work still waits on
    blevel = [0] * n
    for i in range(n - 1, -1, -1):
        best = 0
        qi = queue[i]
        for s_ in succs[i]:
            lat = 0 if queue[s_] == qi else (local if queue[s_] // 3 == qi // 3 else glob)
            if blevel[s_] + lat > best:
                best = blevel[s_] + lat
        blevel[i] = cost[i] + best
    # among ready instructions a unit takes the one with the lowest rank (op index skewed by the
    # row block it works on, so block 0 of the next op goes before block 1 of this one: a software
    # pipeline over the sentences), then the longest path to the end
    prio = [((rank[i] if rank is not None else 0.0), i) for i in range(n)]
    nq = cores * 3
    pos_in_q = [0] * n
    count_q = [0] * nq
    for i in range(n):
        pos_in_q[i] = count_q[queue[i]]
        count_q[queue[i]] += 1
    nodes_in_q: list[list[int]] = [[] for _ in range(nq)]
    for i in range(n):
        nodes_in_q[queue[i]].append(i)
    head = [0] * nq                       # position of the oldest unscheduled node of each queue
    done = [False] * n
    ready_at = [0] * n
    finish = [0] * n
    start = [0] * n
    avail: list[list] = [[] for _ in range(nq)]      # (-bottom level, seq, node): ready by the unit's free time
    pending: list[list] = [[] for _ in range(nq)]    # (ready time, seq, node): inside the window
    parked: list[list] = [[] for _ in range(nq)]     # (position, ready time, node): past the window
    t_free = [0] * nq

    def make_ready(i: int) -> None:
        q = queue[i]
        if pos_in_q[i] <= head[q] + window:
            heapq.heappush(pending[q], (ready_at[i], i, i))
        else:
            heapq.heappush(parked[q], (pos_in_q[i], ready_at[i], i))

    for i in range(n):
        if remaining[i] == 0:
            make_ready(i)
    result_order: list[list[int]] = [[] for _ in range(nq)]
    for _ in range(n):
        best_q, best_t = -1, 0
        for q in range(nq):
            av, pe = avail[q], pending[q]
            tf = t_free[q]
            while pe and pe[0][0] <= tf:
                _, seq, node = heapq.heappop(pe)
                heapq.heappush(av, (prio[node], seq, node))
            if av:
                t = tf
            elif pe:
                t = pe[0][0]
            else:
                continue
            if best_q < 0 or t < best_t:
                best_q, best_t = q, t
        q = best_q
        av, pe = avail[q], pending[q]
        if av:
            cand = av[0]
            node = cand[-1]
            # an instruction of an earlier (op, block) that becomes ready while this one would
            # still be in its first half goes first: the unit idles for it rather than start a
            # long transfer of later work (e.g. a LayerNorm's gamma behind prefetched weights)
            horizon = t_free[q] + cost[node] // 2
            urgent = None
            for item in pe[:64]:
                nd = item[2]
                if item[0] < horizon and prio[nd][0] <= cand[0][0] - 0.5 and (
                        urgent is None or prio[nd] < prio[urgent[2]]):
                    urgent = item
            if urgent is not None:
                pe.remove(urgent)
                heapq.heapify(pe)
                node = urgent[2]
            else:
                heapq.heappop(av)
        else:
            _, _, node = heapq.heappop(pe)
        t0 = max(t_free[q], ready_at[node])
        start[node] = t0
        finish[node] = t0 + cost[node]
        t_free[q] = finish[node]
        done[node] = True
        result_order[q].append(node)
        oq = nodes_in_q[q]
        while head[q] < len(oq) and done[oq[head[q]]]:
            head[q] += 1
        pk = parked[q]
        while pk and pk[0][0] <= head[q] + window:
            _, rt, i = heapq.heappop(pk)
            heapq.heappush(pending[q], (rt, i, i))
        for s in succs[node]:
            qs = queue[s]
            lat = 0 if qs == q else (local if qs // 3 == q // 3 else glob)
            if finish[node] + lat > ready_at[s]:
                ready_at[s] = finish[node] + lat
            remaining[s] -= 1
            if remaining[s] == 0:
                make_ready(s)
    est = max(finish) if n else 0
    if debug is not None:
        debug.update(start=start, finish=finish, queue=queue, cost=cost, succs=succs)
    return _with_syncs(nodes, preds, succs, queue, result_order, start, cores), est


def _sem_local(src_unit: int, dst_unit: int) -> str:
    return f"l{_LOCAL_PAIRS.index((src_unit, dst_unit))}"


@functools.lru_cache(maxsize=None)
def _semaphore(src_q: int, dst_q: int, cores: int) -> tuple:
    """The semaphore from queue src_q to queue dst_q (core * 3 + unit): a local one per unit pair,
    a global one per core pair (cached: asked for every dependency across queues)."""
    sc, su = divmod(src_q, 3)
    dc, du = divmod(dst_q, 3)
    if sc == dc:
        return ("l", sc, _LOCAL_PAIRS.index((su, du)))
    assert su == 0 and du == 0, "cross-core dependencies go through DRAM, DMA to DMA"
    return ("g", sc * cores + dc)


def _with_syncs(nodes, preds, succs, queue, result_order, start, cores):
    nq = cores * 3
    pos = [0] * len(nodes)
    for q in range(nq):
        for k, a in enumerate(result_order[q]):
            pos[a] = k

    # a consumer waits only for the last (in its queue's order) of its producers on each other
    # queue; only those producers signal (a later signal covers every earlier instruction)
    needs: dict[int, dict[int, int]] = {}            # consumer -> {source queue: producer}
    signalled: set[tuple[int, int]] = set()           # (producer, consumer queue)
    for b in range(len(nodes)):
        qb = queue[b]
        last: dict[int, int] = {}
        for a in preds[b]:
            qa = queue[a]
            if qa != qb and (qa not in last or pos[a] > pos[last[qa]]):
                last[qa] = a
        if last:
            needs[b] = last
            for qa, a in last.items():
                signalled.add((a, qb))
    count: dict[tuple, int] = {}
    sig_count: dict[tuple[int, int], int] = {}
    signals_after: dict[int, list[tuple]] = {}
    for q in range(nq):
        for a in result_order[q]:
            targets = sorted(tq for tq in {queue[s_] for s_ in succs[a]} if tq != q and (a, tq) in signalled)
            for tq in targets:
                sem = _semaphore(q, tq, cores)
                count[sem] = count.get(sem, 0) + 1
                sig_count[(a, tq)] = count[sem]
                signals_after.setdefault(a, []).append(sem)

    def encode_sem(sem: tuple) -> int:
        return sem[2] if sem[0] == "l" else (GLOBAL | sem[1])

    streams: list[list[tuple[int, int, object]]] = [[] for _ in range(cores)]   # (time, seq, Instr)
    seq = 0
    for q in range(nq):
        core, unit = divmod(q, 3)
        waited: dict[tuple, int] = {}
        for b in result_order[q]:
            t = start[b]
            for qa, a in sorted(needs.get(b, {}).items()):
                sem = _semaphore(qa, q, cores)
                value = sig_count[(a, q)]
                if waited.get(sem, 0) >= value:
                    continue
                waited[sem] = value
                streams[core].append((t, seq, Instr(WAIT, (unit, encode_sem(sem), value))))
                seq += 1
            streams[core].append((t, seq, nodes[b][1]))
            seq += 1
            for sem in signals_after.get(b, ()):
                streams[core].append((t, seq, Instr(SIGNAL, (unit, encode_sem(sem)))))
                seq += 1
    out = []
    for core in range(cores):
        items = sorted(streams[core], key=lambda x: (x[0], x[1]))
        out.append([ins for _, _, ins in items] + [make("end")])
    return out


__all__ = ["schedule"]
