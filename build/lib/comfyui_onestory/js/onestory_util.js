// Shared helpers for the OneStory frontend files (no side effects: importing registers nothing).
// The pack works without any of this: every choice the UI makes is a plain widget value.
import { api } from "../../scripts/api.js";

export const STRIP_NODES = ["OneStoryFrameSelector", "OneStoryNextShot", "OneStoryPreviewMemory"];
export const SHOT_NODES = ["OneStoryNextShot", "OneStoryNextShots", "OneStoryAddShot"];
export const OVERRIDES = "memory_overrides";
export const CYCLE = { null: "pin", pin: "exclude", exclude: null };   // click: pin → exclude → neutral

const key = (shot, frame) => `${shot},${frame}`;

// memory_overrides text → Map("shot,frame" → "pin" | "exclude"). Bare memory indices (allowed in the
// Python format) are turned into pairs with `frames` (the payload), so a rewrite stores pairs only.
export function readOverrides(text, frames = []) {
  const out = new Map();
  if (!text || !text.trim()) return out;
  let data;
  try { data = JSON.parse(text); } catch { return out; }          // the node reports bad JSON itself
  for (const state of ["pin", "exclude"]) {
    for (const ref of Array.isArray(data?.[state]) ? data[state] : []) {
      if (Array.isArray(ref) && ref.length === 2) out.set(key(ref[0], ref[1]), state);
      else if (Number.isInteger(ref) && frames[ref]) out.set(key(frames[ref].shot, frames[ref].frame), state);
    }
  }
  return out;
}

// Map → canonical JSON ("" when empty), pairs sorted so the saved workflow diffs cleanly.
export function writeOverrides(map) {
  const lists = { pin: [], exclude: [] };
  for (const [k, state] of map) lists[state].push(k.split(",").map(Number));
  const order = (a, b) => a[0] - b[0] || a[1] - b[1];
  const data = {};
  for (const state of ["pin", "exclude"]) if (lists[state].length) data[state] = lists[state].sort(order);
  return Object.keys(data).length ? JSON.stringify(data) : "";
}

export function overrideKey(frame) { return key(frame.shot, frame.frame); }

// A ComfyUI image ref ({filename, subfolder, type}) → URL through the standard /view route.
export function viewURL(ref) {
  const q = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder ?? "", type: ref.type ?? "temp" });
  const path = `/view?${q}`;
  return typeof api?.apiURL === "function" ? api.apiURL(path) : path;
}

// CSS for one cell of the thumbnail sprite (one PNG, cells side by side), drawn `width` px wide.
export function cellStyle(thumbs, cell, width) {
  const [cw, ch] = thumbs.cell;
  const s = width / cw;
  return {
    width: `${width}px`, height: `${Math.round(ch * s)}px`,
    backgroundImage: `url("${viewURL(thumbs.image)}")`,
    backgroundSize: `${Math.round(thumbs.count * cw * s)}px ${Math.round(ch * s)}px`,
    backgroundPosition: `${-Math.round(cell * cw * s)}px 0px`,
    imageRendering: cw < width ? "pixelated" : "auto",
  };
}

export function el(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  const { style, dataset, ...rest } = props;
  Object.assign(e, rest);
  if (style) Object.assign(e.style, style);
  if (dataset) Object.assign(e.dataset, dataset);
  for (const c of children) if (c != null) e.append(c);
  return e;
}

// Tell the frontend the workflow changed (unsaved marker, undo), on frontends that expose it.
export function markChanged(app, node) {
  node.setDirtyCanvas?.(true, true);
  app.graph?.setDirtyCanvas?.(true, true);
  app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.();
}
