"""The S4 compile report: the cycle model run over the program (s4c.s4.cycles), broken down per IR
op and per unit.

report.json key "s4" (stable keys first):
    cycles, clock_hz, latency_s, batch, throughput_per_s, cores, sram_peak_bytes, dram_bytes_moved,
    ops: [{name, onnx_nodes, unit, cycles, op, cycles_by_unit}]   (unit = the op's busiest unit)
  plus: machine, precision, instructions, unit_busy / utilisation (per unit, summed / averaged over
  cores), dram (constant bytes, io bytes, activation peak and sum without reuse), sram (resident
  peak, values kept resident, row-local values spilled to DRAM for want of SRAM and their bytes
  per core), schedule_estimate_cycles, idle (why each unit is not busy, s4c/s4/idle.py):
  {causes, units: {"c0.dma": {busy, wait_dma, ..., tail}}, by_unit: {"dma": the same summed over
  cores}}; every unit's entries sum to `cycles` exactly (by_unit's to cores x cycles);
  steady_state (a stream of batches, batch_stream.py): {latency_cycles, bound: {period_cycles, unit,
  throughput_per_s}, weights: {mode, loaded_per_batch_bytes, sram_bytes_all_cores,
  would_fit_resident, tile_bytes}, stream: null, or with S4Options.stream_batches {batches, cycles,
  period_cycles, throughput_per_s, gain_over_latency, busiest_unit, busiest_unit_busy,
  busiest_unit_idle, instructions}}.

dram_bytes_moved counts what the cycle model charges (bytes in the timing dtype: MixInt8bf16 by
default); cycles of an op are busy cycles summed over cores.
"""

from __future__ import annotations

from s4c.s4.cycles import schedule as cycle_schedule
from s4c.s4.idle import CAUSES

from .base import UNITS
from .batch_stream import steady_state_section


def make_report(lowered, graph=None) -> tuple[dict, str]:
    prog = lowered.program
    m = prog.machine
    per_op: dict[int, dict[str, int]] = {}
    moved = [0, 0]          # DRAM bytes moved, of which loaded from the constant segment
    const_end = len(prog.const)

    def on_event(ev):
        if ev.unit not in UNITS or ev.ins.op in (1, 2):
            return
        d = per_op.setdefault(ev.ins.dbg, {u: 0 for u in UNITS})
        d[ev.unit] += ev.cost.cycles
        if ev.unit == "dma":
            moved[0] += ev.cost.bytes
            src = ev.fields.get("table" if "table" in ev.fields else "src", const_end)
            if ev.ins.mnemonic in ("dma.ld", "dma.gather") and src < const_end:
                moved[1] += ev.cost.bytes

    rep = cycle_schedule(prog, None, on_event)
    g = lowered.graph
    batch = 1
    if g is not None:
        for v in g.inputs:
            if v.shape:
                batch = int(v.shape[0])
                break
    latency = rep.latency_s
    ops = []
    for i, name in enumerate(lowered.op_names):
        op = g.ops[i] if g is not None and i < len(g.ops) else None
        d = per_op.get(i, {u: 0 for u in UNITS})
        unit = max(UNITS, key=lambda u: d[u])
        ops.append({"name": name, "onnx_nodes": list(op.onnx_nodes) if op is not None else [], "unit": unit,
                    "cycles": int(d[unit]), "op": op.op if op is not None else "", "cycles_by_unit": d})
    cores = len(prog.cores)
    busy = {u: sum(v for k, v in rep.unit_busy.items() if k.endswith("." + u)) for u in UNITS}
    total = max(rep.total_cycles, 1)
    st = lowered.stats
    report = {
        "cycles": int(rep.total_cycles),
        "clock_hz": float(m.clock_hz),
        "latency_s": latency,
        "batch": batch,
        "throughput_per_s": batch / latency if latency > 0 else 0.0,
        "cores": cores,
        "sram_peak_bytes": int(st.get("sram_scratch_high", 0)),
        "dram_bytes_moved": int(moved[0]),
        "ops": ops,
        "machine": m.name,
        "precision": st.get("precision", "mixed"),
        "instructions": int(rep.instructions),
        "unit_busy": busy,
        "utilisation": {u: busy[u] / (total * cores) for u in UNITS},
        "dram": {"const_bytes": st.get("const_bytes", 0), "io_bytes": st.get("dram_io_bytes", 0),
                 "activation_peak_bytes": st.get("dram_activation_peak", 0),
                 "activation_sum_without_reuse_bytes": st.get("dram_activation_total", 0),
                 "dram_size": st.get("dram_size", 0)},
        "sram": {"resident_peak_bytes": st.get("sram_resident_peak", 0),
                 "resident_values": st.get("sram_resident_values", 0),
                 "spilled_values": st.get("sram_spilled_values", 0),
                 "spilled_bytes": st.get("sram_spilled_bytes", 0)},
        "schedule_estimate_cycles": st.get("schedule_estimate_cycles", 0),
        "idle": idle_section(rep),
        "steady_state": steady_state_section(lowered, rep, batch, moved[1]),
    }
    return report, markdown(report)


def idle_section(rep) -> dict:
    """report.json's "idle": busy + each idle cause per core x unit, and summed per unit kind."""
    units = {name: {"busy": int(rep.unit_busy[name]), **{c: int(v) for c, v in idle.items()}}
             for name, idle in rep.unit_idle.items()}
    by_unit = {u: {c: sum(d[c] for name, d in units.items() if name.endswith("." + u)) for c in ("busy",) + CAUSES}
               for u in UNITS}
    return {"causes": ["busy", *CAUSES], "units": units, "by_unit": by_unit}


def idle_markdown(r: dict) -> list[str]:
    idle, total, cores = r["idle"], r["cycles"], r["cores"]
    head = "| unit | busy | " + " | ".join(c.replace("_", " ") for c in CAUSES) + " |"
    rule = "|---|" + "---:|" * (len(CAUSES) + 1)
    lines = ["", "### Idle time", "",
             "Each unit's cycles split into busy and why it is not (s4c/s4/idle.py): waiting on a semaphore "
             "signalled by this core's DMA / SPU / VPU or by another core (the producer's work, the signal and "
             "its latency), waiting on a busy unit (the producer still ran work queued ahead of the awaited "
             "work), and the tail after the unit's last instruction; while the producer itself was waiting, "
             "its own causes count. Each row sums to the total.", "",
             f"Per unit, summed over the {cores} core(s) (% of {cores} x {total:,} cycles):", "", head, rule]
    for u, d in idle["by_unit"].items():
        lines.append(f"| {u} | " + " | ".join(f"{d[c] / max(cores * total, 1):.1%}" for c in idle["causes"]) + " |")
    lines += ["", "Per core and unit (cycles):", "", head, rule]
    for name, d in idle["units"].items():
        lines.append(f"| {name} | " + " | ".join(f"{d[c]:,}" for c in idle["causes"]) + " |")
    return lines


def markdown(r: dict) -> str:
    lines = ["## S4", "",
             f"Machine `{r['machine']}`, {r['cores']} core(s), timing precision {r['precision']}.", "",
             "| metric | value |", "|---|---|",
             f"| modelled cycles | {r['cycles']:,} |",
             f"| latency | {r['latency_s'] * 1e6:,.1f} us at {r['clock_hz'] / 1e9:g} GHz |",
             f"| throughput | {r['throughput_per_s']:,.1f} sentences/s (batch {r['batch']}) |",
             f"| SRAM peak (per core) | {r['sram_peak_bytes']:,} bytes |",
             f"| DRAM bytes moved | {r['dram_bytes_moved']:,} |",
             f"| DRAM activations | peak {r['dram']['activation_peak_bytes']:,} bytes "
             f"(without reuse {r['dram']['activation_sum_without_reuse_bytes']:,}) |",
             f"| SRAM residency | {r['sram']['resident_values']} values (peak {r['sram']['resident_peak_bytes']:,} bytes "
             f"per core), {r['sram']['spilled_values']} spilled to DRAM ({r['sram']['spilled_bytes']:,} bytes per core) |",
             f"| instructions | {r['instructions']:,} |",
             "| utilisation DMA / SPU / VPU | " + " / ".join(f"{r['utilisation'][u]:.2f}" for u in UNITS) + " |",
             "", "| op | unit | cycles (busy, all cores) |", "|---|---|---|"]
    for op in sorted(r["ops"], key=lambda o: -o["cycles"])[:15]:
        lines.append(f"| `{op['name']}` | {op['unit']} | {op['cycles']:,} |")
    return "\n".join(lines + steady_markdown(r) + idle_markdown(r))


def steady_markdown(r: dict) -> list[str]:
    st = r["steady_state"]
    hz, batch = r["clock_hz"], r["batch"]
    b, w, s = st["bound"], st["weights"], st["stream"]
    lines = ["", "### Steady state (a stream of batches)", "",
             "| mode | cycles per batch | sentences/s | vs latency |", "|---|---:|---:|---:|",
             f"| latency (one batch from an idle chip) | {st['latency_cycles']:,} | {r['throughput_per_s']:,.1f} | 1.00x |"]
    if s is not None:
        lines.append(f"| steady state, simulated ({s['batches']} batches in one scheduled program) | "
                     f"{s['period_cycles']:,.0f} | {s['throughput_per_s']:,.1f} | {s['gain_over_latency']:.2f}x |")
    lines += [f"| bound: the busiest unit's work per batch ({b['unit']}) | {b['period_cycles']:,} | "
              f"{b['throughput_per_s']:,.1f} | {st['latency_cycles'] / max(b['period_cycles'], 1):.2f}x |", ""]
    if s is None:
        lines.append("The stream was not simulated: `--s4-stream-batches K` / S4Options(stream_batches=K) does it "
                     "(0 turns it off; builds with sequence buckets report the bound only).")
    else:
        why = ", ".join(f"{c.replace('_', ' ')} {v:.1%}" for c, v in sorted(s["busiest_unit_idle"].items(),
                                                                           key=lambda kv: -kv[1]) if v >= 0.001)
        lines.append(f"Simulated: period = (T({s['batches']}) - T(1)) / {s['batches'] - 1} from the cycle model "
                     f"(codegen/s4/batch_stream.py). Limit: {s['busiest_unit']}, busy {s['busiest_unit_busy']:.1%} of "
                     f"the stream" + (f"; the rest: {why}" if why else "") + ". The next batch reuses this batch's "
                     "SRAM (residency offsets, scratch ring), so it overlaps only as far as those buffers free up; "
                     "the bound assumes every stall is filled.")
        if s["period_cycles"] >= st["latency_cycles"]:
            lines.append("Here the interleaved schedule is no faster than running the batches back to back (the "
                         "list scheduler is greedy): no steady-state gain over latency mode.")
    lines += ["", f"Weights: {w['mode']}: streamed from DRAM every batch in tiles of at most "
              f"{w['tile_bytes'] >> 10} KiB through each core's scratch ring, the next tiles loading while the SPU "
              f"works on the current one: {w['loaded_per_batch_bytes']:,} bytes loaded from the constant segment per "
              f"batch (timing dtype), which would {'' if w['would_fit_resident'] else 'not '}fit the "
              f"{w['sram_bytes_all_cores']:,} bytes of SRAM beside the scratch areas; the lowering never keeps "
              "weights resident."]
    return lines
