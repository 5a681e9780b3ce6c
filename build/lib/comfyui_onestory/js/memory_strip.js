// Memory strip: after a Frame Selector / Next Shot / Preview Memory node runs, show every memory
// frame it saw (cheap latent→RGB thumbnails from the node's UI payload) with its score bar, kernel
// tier, shot of origin and a ring when it was selected. A click cycles pin → exclude → neutral and
// writes the node's `memory_overrides` widget, so the choice is saved in the workflow JSON.
import { app } from "../../scripts/app.js";
import {
  CYCLE, OVERRIDES, STRIP_NODES, cellStyle, el, markChanged, overrideKey, readOverrides, writeOverrides,
} from "./onestory_util.js";

const THUMB = 56;
const CSS = `
.onestory-strip { font: 10px sans-serif; color: var(--input-text, #ddd); padding: 6px 4px 2px; overflow-y: auto;
  box-sizing: border-box; }
.onestory-strip .os-head { opacity: .8; margin-bottom: 4px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.onestory-strip .os-row { display: flex; flex-wrap: wrap; gap: 4px; }
.onestory-strip .os-cell { position: relative; cursor: pointer; border: 2px solid transparent; border-radius: 3px; }
.onestory-strip .os-cell.kept { border-color: #4fa3ff; }
.onestory-strip .os-cell.pinned { border-color: #ffc94a; }
.onestory-strip .os-cell.excluded .os-img { opacity: .3; }
.onestory-strip .os-img { display: block; background-repeat: no-repeat; }
.onestory-strip .os-bar { height: 3px; background: #4fa3ff; margin-top: 1px; }
.onestory-strip .os-tag { position: absolute; top: 0; padding: 0 2px; background: #000a; border-radius: 2px; }
.onestory-strip .os-tag.l { left: 0; } .onestory-strip .os-tag.r { right: 0; }
.onestory-strip .os-state { position: absolute; bottom: 6px; left: 0; padding: 0 2px; font-weight: bold;
  border-radius: 2px; background: #ffc94a; color: #000; }
.onestory-strip .os-state.exclude { background: #e55; color: #fff; }`;

function injectCSS() {
  if (document.getElementById("onestory-strip-css")) return;
  document.head.append(el("style", { id: "onestory-strip-css", textContent: CSS }));
}

function payloadOf(output) {
  const p = output?.onestory_selection?.[0] ?? output?.onestory_story?.[0];
  return p && Array.isArray(p.memory_frames) && p.thumbs ? p : null;
}

function render(node, strip, payload) {
  const widget = node.widgets?.find((w) => w.name === OVERRIDES);
  const frames = payload.memory_frames;
  const overrides = readOverrides(widget?.value ?? "", frames);
  const scored = frames.filter((f) => f.score != null).map((f) => f.score);
  // Bars: score relative to the best one (scores of the heuristic scorers and the learned one are >= 0;
  // if some are negative, the range starts at the lowest).
  const lo = Math.min(0, ...scored), hi = Math.max(...scored);
  const kept = frames.filter((f) => f.kept).length;
  const head = frames.length === 0 ? "first shot: no memory yet"
    : scored.length ? `${kept} of ${frames.length} memory frames kept` +
      (payload.tier_budget != null ? ` · tiers at budget ${payload.tier_budget}` : "")
    : `${frames.length} memory frames`;
  const cells = frames.map((f) => {
    const state = overrides.get(overrideKey(f)) ?? null;
    // The story's own flags (the payload's are effective ones, i.e. include the override at run time).
    const own = f.override ? { pinned: false, excluded: false } : f;
    const pinned = state ? state === "pin" : own.pinned, excluded = state ? state === "exclude" : own.excluded;
    const share = f.score == null ? null : hi > lo ? (f.score - lo) / (hi - lo) : 1;
    const tier = f.tier != null ? payload.tier_labels?.[f.tier] ?? `t${f.tier}` : null;
    const title = [`shot ${f.shot}, frame ${f.frame} (memory #${f.index}, ${f.source})`,
      payload.captions?.[f.shot] && `“${payload.captions[f.shot]}”`,
      f.score != null && `score ${f.score.toFixed(3)}${f.kept ? `, rank ${f.rank + 1}` : ", not kept"}`,
      tier && `kernel ${tier}`, `click: ${CYCLE[state] ?? "neutral"}`].filter(Boolean).join("\n");
    const cell = el("div", {
      className: ["os-cell", f.kept && "kept", pinned && "pinned", excluded && "excluded"].filter(Boolean).join(" "),
      title, dataset: { index: f.index, shot: f.shot, frame: f.frame, override: state ?? "", kept: f.kept },
    }, [
      el("div", { className: "os-img", style: cellStyle(payload.thumbs, f.index, THUMB) }),
      share == null ? null : el("div", { className: "os-bar", style: { width: `${Math.max(2, share * THUMB)}px` } }),
      el("span", { className: "os-tag l", textContent: `S${f.shot}` }),
      tier ? el("span", { className: "os-tag r", textContent: tier }) : null,
      state ? el("span", { className: `os-state ${state}`, textContent: state === "pin" ? "PIN" : "OFF" }) : null,
    ]);
    cell.addEventListener("click", (e) => {
      e.stopPropagation();
      if (!widget) return;
      const next = CYCLE[state];
      if (next) overrides.set(overrideKey(f), next); else overrides.delete(overrideKey(f));
      widget.value = writeOverrides(overrides);
      widget.callback?.(widget.value);
      render(node, strip, payload);           // shows the choice now; the node re-runs on the next queue
      markChanged(app, node);
    });
    return cell;
  });
  strip.replaceChildren(el("div", { className: "os-head", textContent: payload.note || head }),
    el("div", { className: "os-row" }, cells));
}

function showStrip(node, payload) {
  if (typeof node.addDOMWidget !== "function") return;        // older frontends: no strip, pack still works
  injectCSS();
  let widget = node.widgets?.find((w) => w.name === "onestory_strip");
  if (!widget) {
    const strip = el("div", { className: "onestory-strip" });
    widget = node.addDOMWidget("onestory_strip", "onestory_strip", strip, {
      serialize: false, hideOnZoom: false,
      getMinHeight: () => Math.min(260, 24 + Math.ceil(strip.querySelectorAll(".os-cell").length / 4) * (THUMB + 12)),
    });
    widget.serialize = false;                                  // never part of widgets_values / the prompt
  }
  // One sprite PNG per run: mark the strip once it has loaded (the browser test waits for this).
  widget.element.dataset.loaded = "0";
  render(node, widget.element, payload);
  const probe = new Image();
  probe.onload = () => { widget.element.dataset.loaded = probe.naturalWidth > 0 ? "1" : "0"; };
  probe.src = widget.element.querySelector(".os-img")?.style.backgroundImage.slice(5, -2) ?? "";
  const size = node.computeSize?.();
  if (size) node.setSize?.([Math.max(node.size[0], size[0]), Math.max(node.size[1], size[1])]);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "OneStory.MemoryStrip",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!STRIP_NODES.includes(nodeData?.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const payload = payloadOf(output);
      if (payload) showStrip(this, payload);
    };
  },
});
