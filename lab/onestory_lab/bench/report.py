"""results.json -> results.md (markdown tables) and PNG plots (matplotlib optional)."""
from __future__ import annotations

from pathlib import Path

from onestory_lab.bench.costmodel import METHOD_LABELS, METHODS


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def markdown(r: dict) -> str:
    cfg, m = r["config"], r["machine"]
    shots = [str(s) for s in cfg["shots"]]
    st = r["steps"]
    lines = [
        "# OneStory benchmark results", "",
        f"{'QUICK run (format check only, numbers meaningless)' if r['quick'] else 'Full run'}, {r['created']}.",
        f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']}, {m['torch_num_threads']} thread(s), "
        f"load average at start {m['loadavg_start']}, end {m['loadavg_end']}.",
        f"Scaled config `{cfg['name']}`: dim {cfg['dim']}, ffn {cfg['ffn_dim']}, {cfg['num_heads']} heads, "
        f"{cfg['num_layers']} layers, latent {cfg['frames']}x{cfg['height']}x{cfg['width']} per shot, "
        f"caption {cfg['text_len']} tokens, CFG batch 2, k = {cfg['k']}, {cfg['repeats']} interleaved rounds "
        f"(full history: {st['full_history_repeats']} after the first shot), medians.", "",
        "## Targets", "", "| target | value | limit | met |", "|---|---|---|---|",
    ]
    for k, t in r["targets"].items():
        lines.append(f"| {k} | {t['value']:.4f} | {t['limit']} | {'yes' if t['met'] else '**no**'} |")
    lines += ["", "## Step time (ms, median) per shot", "",
              "| method | ctx tokens (shot 2 / last) | " + " | ".join(f"shot {s}" for s in shots) + " |",
              "|---|---|" + "---|" * len(shots)]
    for meth in METHODS:
        row = st["step_seconds"][meth]
        tok = st["context_tokens"][meth]
        lines.append(f"| {METHOD_LABELS[meth]} | {tok[shots[0]]} / {tok[shots[-1]]} | "
                     + " | ".join(f"{1000 * row[s]:.1f}" for s in shots) + " |")
    lines += ["", "## Step time relative to no memory (paired per round, median)", "",
              "| method | " + " | ".join(f"shot {s}" for s in shots) + " |", "|---|" + "---|" * len(shots)]
    for meth in METHODS:
        lines.append(f"| {METHOD_LABELS[meth]} | "
                     + " | ".join(f"{r['step_ratio_vs_none'][meth][s]:.3f}" for s in shots) + " |")
    mem = r.get("memory")
    if mem and "bytes" in mem:
        ms = list(next(iter(mem["bytes"].values())).keys())
        lines += ["", "## Peak memory added by one step (MiB)", "", f"Method: {mem['method']}.", "",
                  "| method | " + " | ".join(f"shot {s} measured / analytic fp32" for s in ms) + " |",
                  "|---|" + "---|" * len(ms)]
        for meth in METHODS:
            lines.append(f"| {METHOD_LABELS[meth]} | " + " | ".join(
                f"{mem['bytes'][meth][s] / 2**20:.1f} / {mem['analytic_activation_bytes_fp32'][meth][s] / 2**20:.1f}"
                for s in ms) + " |")
    elif mem:
        lines += ["", f"Peak memory: {mem.get('status')}: {mem.get('reason')}"]
    sc = r["selector_conditioner"]
    lines += ["", "## Frame Selector + Adaptive Conditioner per shot, scaled config (budget 1, learned selector)", "",
              f"Medians; the step is the budget-1 step of the same shot timed right after. Fraction of a shot "
              f"assumes S = {sc['steps_per_shot']} steps.", "",
              "| shot | memory frames | selector ms | conditioner ms | fraction of a step | fraction of a shot |",
              "|---|---|---|---|---|---|"]
    for row in sc["per_shot"]:
        lines.append(f"| {row['shot']} | {row['memory_frames']} | {1000 * row['selector_seconds']:.2f} | "
                     f"{1000 * row['conditioner_seconds']:.2f} | {_pct(row['fraction_of_step'])} | "
                     f"{_pct(row['fraction_of_shot'])} |")
    rs = r["real_scale"]
    sz, rates = rs["sizes"], rs["rates"]
    lines += ["", f"## Frame Selector + Adaptive Conditioner at {sz['model']['name']} {sz['geometry']['name']} sizes", "",
              f"Measured: selector width {sz['selector']['width']}, {sz['selector']['num_queries']} queries, "
              f"{sz['selector']['heads']} heads, stride {sz['selector']['spatial_stride']}; conditioner D = "
              f"{sz['model']['dim']}; caption {sz['model']['text_len']} x {sz['model']['text_dim']}; "
              f"{sz['latent'][0]} latent frames of {sz['model']['latent_channels']} x {sz['latent'][1]} x "
              f"{sz['latent'][2]} per shot; K = {sz['k']}, budget {sz['budget']}; medians of {sz['repeats']}. "
              f"Priced: one DiT step (CFG batch 2, {rs['noise_tokens']} + {rs['context_tokens']} tokens, "
              f"{rs['step_flops'] / 1e15:.2f} PFLOP) at this CPU's rates on the model's own kernel shapes: "
              f"projection {rates['projection_flops_per_second'] / 1e9:.0f}, FFN "
              f"{rates['ffn_flops_per_second'] / 1e9:.0f}, SDPA {rates['attention_flops_per_second'] / 1e9:.0f} "
              f"GFLOP/s -> {rs['step_seconds_priced']:.0f} s per step.", "",
              "| shot | memory frames | selector s | conditioner s | fraction of a step | FLOP fraction "
              "| re-encoding the previous frames | bank fingerprint |", "|---|---|---|---|---|---|---|---|"]
    for row in rs["per_shot"]:
        lines.append(f"| {row['shot']} | {row['memory_frames']} | {row['selector_seconds']:.3f} | "
                     f"{row['conditioner_seconds']:.3f} | {100 * row['fraction_of_step']:.5f} % | "
                     f"{100 * row['flop_fraction_of_step']:.5f} % | {row['reencode_previous_seconds']:.3f} s "
                     f"({100 * row['reencode_previous_fraction_of_step']:.5f} %) | "
                     f"{row['fingerprint_seconds']:.3f} s ({100 * row['fingerprint_fraction_of_step']:.6f} %) |")
    pc = rs.get("price_check")
    if pc:
        lines += ["", f"Pricing check on the scaled config: priced {1000 * pc['priced_seconds']:.1f} ms, measured "
                  f"{1000 * pc['measured_seconds']:.1f} ms (priced / measured {pc['priced_over_measured']:.2f}: "
                  "the share left out is element-wise work and dispatch)."]
    pc = r["pipeline_check"]
    lines += ["", "Real `NextShotGenerator.generate` (budget 1): " + "; ".join(
        f"shot {p['shot']}: {p['steps']} steps, selector x{p['selector_calls']}, conditioner x{p['conditioner_calls']}, "
        f"DiT x{p['dit_calls']}, {p['seconds']:.2f} s" for p in pc["per_shot"])
        + f". Context built once per shot: {pc['context_built_once_per_shot']}; "
          f"one DiT call per step (both CFG branches batched): {pc['one_dit_call_per_step']}."]
    h = r["hook"]
    lines += ["", "## ComfyUI hook", ""]
    if h.get("status") == "ok":
        lines += [f"Real ComfyUI ({h['comfyui_dir']}, torch {h['torch']}), tiny Wan dim {h['dim']}, "
                  f"{h['num_layers']} layers, latent {h['latent']}, `comfy.sample.sample` with {h['steps_per_sample']} "
                  f"euler steps, {h['repeats']} interleaved rounds.", "",
                  "| MODEL | sample s (median) | ratio vs unpatched |", "|---|---|---|",
                  f"| unpatched | {h['sample_seconds']['unpatched']:.4f} | 1 |",
                  f"| hook, empty context | {h['sample_seconds']['empty_context']:.4f} | {h['hook_overhead_ratio']:.4f} |",
                  f"| hook, budget-1 context ({h['context_tokens_budget1']} tokens) | "
                  f"{h['sample_seconds']['budget1_context']:.4f} | {h['budget1_hook_ratio']:.4f} |", "",
                  f"Empty-context output identical to unpatched: {h['empty_context_output_identical']}."]
    else:
        lines.append(f"Not measured ({h.get('status')}): {h.get('reason')}")
    ac = r["analytic_check"]
    cal = ac["calibration"]
    pts = "; ".join(f"{p['method']} (shot {p['shots']}, {p['context_tokens']} context tokens): step "
                    f"{1000 * p['step_seconds']:.1f} ms, self-attention {1000 * p['attention_seconds']:.1f} ms"
                    for p in cal["calibration_points"])
    lines += ["", "## Cost model vs measurement (scaled config, step ratio vs no memory)", "",
              f"Calibrated step-time model (fixed + token work + self-attention, `costmodel.StepTimeModel`), "
              f"calibrated in this run on: {pts}. Result: fixed {1000 * cal['fixed_seconds']:.1f} ms per step, "
              f"token work {cal['token_flops_per_second'] / 1e9:.1f} GFLOP/s, self-attention "
              f"{cal['attention_flops_per_second'] / 1e9:.1f} GFLOP/s. Every other row is predicted.", "",
              f"Max relative error of the predicted rows {_pct(ac['max_relative_error'])} (tolerance "
              f"{_pct(ac['tolerance'])}); FLOP counts alone: {_pct(ac['max_relative_error_flops_only'])}. "
              f"Token counts of the model equal the measured context sizes: {ac['token_counts_match']}.", "",
              "| method | shot | tokens | predicted | measured | rel. error | FLOP ratio | rel. error "
              "| attention share measured / predicted |", "|---|---|---|---|---|---|---|---|---|"]
    for row in ac["rows"]:
        err = "calibration" if row["calibration_point"] else _pct(row["relative_error"])
        lines.append(f"| {METHOD_LABELS[row['method']]} | {row['shot']} | {row['context_tokens_measured']} | "
                     f"{row['predicted_ratio']:.3f} | {row['measured_ratio']:.3f} | {err} | "
                     f"{row['flop_ratio']:.3f} | {_pct(row['flop_relative_error'])} | "
                     f"{_pct(row['attention_share_measured'])} / {_pct(row['attention_share_predicted'])} |")
    lines += ["", "## Analytic cost model at full size (CFG batch 2, bf16 activations)", ""]
    for key, a in r["analytic"].items():
        lines += [f"### {key}: latent {a['latent']}, {a['tokens_per_latent_frame']} tokens/latent frame, "
                  f"{a['noise_tokens']} noise tokens, {a['step_flops_no_memory'] / 1e15:.2f} PFLOP per step", "",
                  "| method | ctx tokens shot 2 | token overhead shot 2 | shot 10 | step FLOPs x (shot 2) | x (shot 10) "
                  "| activations x (shot 10) |", "|---|---|---|---|---|---|---|"]
        for meth, d in a["methods"].items():
            s2, s10 = d["shots"][0], d["shots"][-1]
            lines.append(f"| {d['label']} | {s2['context_tokens']} (bound {s2['context_tokens_bound']}) | "
                         f"{_pct(s2['token_overhead'])} | {_pct(s10['token_overhead'])} | {s2['step_ratio']:.3f} | "
                         f"{s10['step_ratio']:.3f} | {s10['activation_ratio']:.3f} |")
        lines += ["", f"Selector + conditioner: at most {100 * a['selector_conditioner_fraction_max']:.4f} % of one step.", ""]
    return "\n".join(lines) + "\n"


def plots(r: dict, out: Path) -> list[str]:
    """PNG plots; returns the file names written ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return []
    written = []
    shots = [str(s) for s in r["config"]["shots"]]
    xs = [int(s) for s in shots]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for meth in METHODS:
        ax.plot(xs, [1000 * r["steps"]["step_seconds"][meth][s] for s in shots], marker="o", label=METHOD_LABELS[meth])
    ax.set_yscale("log")
    ax.set_xlabel("shot")
    ax.set_ylabel("step time (ms, median)")
    ax.set_title("Per-step time, scaled config")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "step_time.png", dpi=110)
    plt.close(fig)
    written.append("step_time.png")

    mem = r.get("memory")
    if mem and "bytes" in mem:
        ms = list(next(iter(mem["bytes"].values())).keys())
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for meth in METHODS:
            ax.plot([int(s) for s in ms], [mem["bytes"][meth][s] / 2**20 for s in ms], marker="o",
                    label=METHOD_LABELS[meth])
        ax.set_xlabel("shot")
        ax.set_ylabel("peak memory added by a step (MiB)")
        ax.set_title("Peak step memory, scaled config")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "peak_memory.png", dpi=110)
        plt.close(fig)
        written.append("peak_memory.png")

    ac = r["analytic_check"]["rows"]
    fig, ax = plt.subplots(figsize=(5, 5))
    for meth in METHODS[1:]:
        pts = [row for row in ac if row["method"] == meth]
        ax.scatter([p["predicted_ratio"] for p in pts], [p["measured_ratio"] for p in pts], label=METHOD_LABELS[meth], s=14)
    lim = max([1.0] + [max(p["predicted_ratio"], p["measured_ratio"]) for p in ac]) * 1.1
    ax.plot([0.9, lim], [0.9, lim], "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("calibrated cost model: predicted step time / no memory")
    ax.set_ylabel("measured: step time / no memory")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "model_vs_measured.png", dpi=110)
    plt.close(fig)
    written.append("model_vs_measured.png")

    fig, axes = plt.subplots(1, len(r["analytic"]), figsize=(5 * len(r["analytic"]), 4.2), squeeze=False)
    for ax, (key, a) in zip(axes[0], r["analytic"].items()):
        for meth, d in a["methods"].items():
            ax.plot([row["shot"] for row in d["shots"]], [100 * row["token_overhead"] for row in d["shots"]],
                    marker=".", label=d["label"])
        ax.set_yscale("symlog", linthresh=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("shot")
        ax.set_ylabel("context tokens (% of the shot's tokens)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "analytic_token_overhead.png", dpi=110)
    plt.close(fig)
    written.append("analytic_token_overhead.png")
    return written
