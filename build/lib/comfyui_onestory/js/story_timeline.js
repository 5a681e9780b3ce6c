// Story timeline (sidebar tab): the shots of the open graph in chain order (following the story
// links), with caption, first-frame thumbnail and status — cached, stale (an upstream edit will
// re-run it), running, done — from the standard executing / executed / execution_cached events.
// A click focuses the node. Nothing is stored on the server; status lives in this page only.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { SHOT_NODES, cellStyle, el } from "./onestory_util.js";

const status = new Map();     // node id → {state, sig, thumbs?}
let running = null;
let snapshot = new Map();     // node id → signature at execution_start

const CSS = `
.onestory-timeline { font: 12px sans-serif; padding: 8px; display: flex; flex-direction: column; gap: 6px; }
.onestory-timeline .os-shot { display: flex; gap: 8px; align-items: center; cursor: pointer; padding: 4px;
  border-radius: 4px; border-left: 4px solid #666; background: #8881; }
.onestory-timeline .os-shot:hover { background: #8883; }
.onestory-timeline .os-shot[data-status=done] { border-left-color: #3c3; }
.onestory-timeline .os-shot[data-status=cached] { border-left-color: #4fa3ff; }
.onestory-timeline .os-shot[data-status=stale] { border-left-color: #fa3; }
.onestory-timeline .os-shot[data-status=running] { border-left-color: #f5f; }
.onestory-timeline .os-thumb { flex: none; width: 64px; min-height: 24px; background: #0004; background-repeat: no-repeat; }
.onestory-timeline .os-cap { overflow: hidden; text-overflow: ellipsis; display: -webkit-box; -webkit-line-clamp: 2;
  -webkit-box-orient: vertical; }
.onestory-timeline .os-st { opacity: .7; font-size: 11px; }`;

const nodes = () => app.graph?.nodes ?? app.graph?._nodes ?? [];
const byId = (id) => app.graph?.getNodeById?.(Number(id)) ?? app.graph?.getNodeById?.(id);

function upstream(node, name) {
  const input = node.inputs?.find((i) => i.name === name);
  const link = input?.link != null ? (app.graph.links?.get?.(input.link) ?? app.graph.links?.[input.link]) : null;
  return link ? byId(link.origin_id) : null;
}

// What the server's cache key depends on, seen from the page: this node's widgets and, recursively,
// every upstream node's type and widgets. A change means the node will re-run on the next queue.
function signature(node, seen = new Map()) {
  if (seen.has(node.id)) return seen.get(node.id);
  seen.set(node.id, "");
  const parts = [node.type, JSON.stringify((node.widgets ?? []).filter((w) => w.serialize !== false &&
    w.options?.serialize !== false).map((w) => w.value)), node.mode];
  for (const input of node.inputs ?? []) {
    const src = upstream(node, input.name);
    if (src) parts.push(`${input.name}<${signature(src, seen)}`);
  }
  const sig = parts.join("|");
  seen.set(node.id, sig);
  return sig;
}

// Shot nodes in chain order: depth = shot nodes met walking up the story links.
function shots() {
  const depth = (node) => {
    let d = 0, cur = upstream(node, "story"), guard = 0;
    while (cur && guard++ < 1000) { if (SHOT_NODES.includes(cur.type)) d++; cur = upstream(cur, "story"); }
    return d;
  };
  return nodes().filter((n) => SHOT_NODES.includes(n.type))
    .map((n) => ({ node: n, depth: depth(n) })).sort((a, b) => a.depth - b.depth || a.node.id - b.node.id);
}

function stateOf(node) {
  if (String(node.id) === running) return "running";
  const s = status.get(String(node.id));
  if (!s) return "not run";
  return s.sig !== signature(node) ? "stale" : s.state;
}

function caption(node) {
  const w = node.widgets?.find((x) => x.name === "caption");
  if (node.inputs?.find((i) => i.name === "caption" && i.link != null)) return "(captions from a list)";
  return w?.value || node.title || node.type;
}

function focus(node) {
  const canvas = app.canvas;
  if (typeof canvas?.centerOnNode === "function") canvas.centerOnNode(node);
  if (typeof canvas?.selectNode === "function") canvas.selectNode(node, false);
  canvas?.setDirty?.(true, true);
}

function render(root) {
  const list = shots();
  root.replaceChildren(...(list.length ? list.map(({ node }, i) => {
    const st = stateOf(node), t = status.get(String(node.id))?.thumbs;
    const thumb = el("div", { className: "os-thumb",
      style: t && t.first_frame_cell != null ? cellStyle(t, t.first_frame_cell, 64) : {} });
    const row = el("div", { className: "os-shot", dataset: { nodeId: node.id, status: st }, title: `#${node.id} ${node.type}` },
      [thumb, el("div", {}, [el("div", { className: "os-cap", textContent: `${i + 1}. ${caption(node)}` }),
        el("div", { className: "os-st", textContent: st })])]);
    row.addEventListener("click", () => focus(node));
    return row;
  }) : [el("div", { textContent: "No OneStory shot nodes in this graph." })]));
}

let root = null;
const refresh = () => { if (root?.isConnected) render(root); };

function listen() {
  if (typeof api?.addEventListener !== "function") return false;
  api.addEventListener("execution_start", () => {
    snapshot = new Map(nodes().map((n) => [String(n.id), signature(n)]));
    refresh();
  });
  // A node that stops being the running one has run (nodes without UI output send no "executed").
  const finished = (id) => { if (id != null) status.set(id, { ...status.get(id), state: "done", sig: snapshot.get(id) }); };
  api.addEventListener("executing", ({ detail }) => {
    const next = detail == null ? null : String(typeof detail === "object" ? detail.display_node ?? detail.node : detail);
    if (running !== next) finished(running);
    running = next;
    refresh();
  });
  api.addEventListener("execution_cached", ({ detail }) => {
    for (const id of detail?.nodes ?? []) status.set(String(id), { ...status.get(String(id)), state: "cached", sig: snapshot.get(String(id)) });
    refresh();
  });
  api.addEventListener("executed", ({ detail }) => {
    const id = String(detail?.display_node ?? detail?.node);
    const thumbs = detail?.output?.onestory_selection?.[0]?.thumbs;
    status.set(id, { state: "done", sig: snapshot.get(id), thumbs: thumbs ?? status.get(id)?.thumbs });
    refresh();
  });
  api.addEventListener("execution_success", () => { finished(running); running = null; refresh(); });
  for (const ev of ["execution_error", "execution_interrupted"]) {
    api.addEventListener(ev, () => { running = null; refresh(); });   // the failed node is not "done"
  }
  return true;
}

app.registerExtension({
  name: "OneStory.StoryTimeline",
  async setup() {
    const em = app.extensionManager;
    if (typeof em?.registerSidebarTab !== "function" || !listen()) return;   // feature-detect
    document.head.append(el("style", { textContent: CSS }));
    let timer = null;
    em.registerSidebarTab({
      id: "onestory-timeline", icon: "pi pi-images", title: "Story", tooltip: "OneStory: shots and what will re-run",
      type: "custom",
      render(container) {
        root = el("div", { className: "onestory-timeline" });
        container.replaceChildren(root);
        render(root);
        clearInterval(timer);
        timer = setInterval(refresh, 1000);     // picks up graph edits (stale) without hooking the canvas
      },
      destroy() { clearInterval(timer); root = null; },
    });
  },
});
