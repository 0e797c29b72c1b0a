// syncdiffusion-ldm3d: a 360 viewer inside the nodes that show the pack's equirect images.
//
// Nodes that get it: the pack's image-saving nodes, and stock SaveImage / PreviewImage fed by a pack node.
// What an image is comes from the graph, checked against its shape: a packed stereo pair only from the pack's
// stereo outputs (Save Stereo 360, Stereo 360's 'stereo', Pack Eyes; top-bottom = square, side-by-side = 4:1),
// anything else only when it is an equirect (2:1). A square LDM3D picture or a 4:1 flat panorama gets no viewer.
// Where it fits, a "360 view" panel appears in the node: drag to look, wheel to zoom, reset; left / right /
// anaglyph for stereo; a depth toggle when the graph also shows the depth of the same picture; "Enter VR" where
// WebXR is available. The viewer takes the plain preview's place; without WebGL nothing is added and the plain
// preview stays. The mesh node gets an "open in 3D preview" button that wires ComfyUI's own Preview3D node.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { Viewer360, hasWebGL } from "./viewer360.js";

const PACK_PREFIX = "SDL3D_";
const IMAGE_NODES = new Set(["SaveImage", "PreviewImage", "SDL3D_SaveStereo360", "SDL3D_SaveDepthPNG16",
                             "SDL3D_SaveDepthMesh"]);
const PANEL_HEIGHT = 260; // scripts/make_ui_workflow.py leaves this room (VIEWER_W x VIEWER_H) in the shipped graphs
const PANEL_MIN_WIDTH = 360;
const STEREO_LAYOUTS = new Set(["top_bottom", "side_by_side"]);
const PLAIN_PREVIEW = "$$canvas-image-preview"; // the frontend's image preview widget (same name in 1.32 to 1.58)
const state = { webgl: null, outputs: new Map() };

function imageUrl(info) {
  const q = new URLSearchParams({ filename: info.filename, subfolder: info.subfolder ?? "", type: info.type ?? "output" });
  return api.apiURL(`/view?${q}`);
}

function measure(url) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve({ w: img.naturalWidth, h: img.naturalHeight });
    img.onerror = () => resolve(null);
    img.src = url;
  });
}

/** What the graph says the shown image is: "top_bottom" / "side_by_side" (a packed stereo frame of a known
 * layout), "stereo" (packed, layout unknown) or null (a plain picture). Only the pack's stereo outputs make
 * packed frames: Save Stereo 360 (its file suffix _360_TB / _360_LR says the layout), and an image input fed,
 * directly or through single-input nodes, by Stereo 360's 'stereo' output or Pack Eyes (their 'layout' widget). */
function declaredLayout(node, info) {
  const packed = (n) => {
    const value = n.widgets?.find((w) => w.name === "layout")?.value;
    if (value === "anaglyph") return null; // one red-cyan picture, not a packed pair
    return STEREO_LAYOUTS.has(value) ? value : "stereo";
  };
  if (node.comfyClass === "SDL3D_SaveStereo360") {
    const suffix = /_360_(TB|LR)\.\w+$/i.exec(info?.filename ?? "")?.[1]?.toUpperCase();
    return suffix ? (suffix === "TB" ? "top_bottom" : "side_by_side") : packed(node);
  }
  let current = node;
  for (let i = 0; i < 4; i++) {
    const origins = inputOrigins(current);
    if (origins.length !== 1) return null;
    const { node: o, slot } = origins[0];
    if (o.comfyClass === "SDL3D_StereoPack") return packed(o);
    if (o.comfyClass === "SDL3D_Stereo360") return o.outputs?.[slot]?.name === "stereo" ? packed(o) : null;
    if (o.comfyClass?.startsWith(PACK_PREFIX)) return null; // another pack output: one picture
    current = o;
  }
  return null;
}

/** The viewer's layout for an image of `size` that the graph declares as `declared` (see declaredLayout), or null
 * for no viewer: a plain picture must be an equirect (2:1); a packed pair must have its layout's shape (top-bottom
 * of two 2:1 eyes is square, side-by-side is 4:1). A square LDM3D picture or a 4:1 panorama gets no viewer. */
function layoutOf(size, declared) {
  if (!size) return null;
  const near = (ratio) => Math.abs(size.w / size.h - ratio) < 0.01 * ratio;
  if (!declared) return near(2) ? "mono" : null;
  if (declared !== "side_by_side" && near(1)) return "top_bottom";
  if (declared !== "top_bottom" && near(4)) return "side_by_side";
  return null;
}

function inputOrigins(node) {
  const graph = node.graph ?? app.graph;
  return (node.inputs ?? []).map((input) => {
    const link = input.link != null ? graph.links?.[input.link] ?? graph.links?.get?.(input.link) : null;
    if (!link) return null;
    const origin = graph.getNodeById(link.origin_id);
    return origin ? { node: origin, slot: link.origin_slot } : null;
  }).filter(Boolean);
}

function ancestors(node, depth = 6) {
  const seen = new Map();
  let frontier = [node];
  for (let d = 0; d < depth && frontier.length; d++) {
    const next = [];
    for (const n of frontier) {
      for (const { node: o, slot } of inputOrigins(n)) {
        const key = o.id;
        if (!seen.has(key)) seen.set(key, { node: o, slots: new Set() });
        seen.get(key).slots.add(slot);
        next.push(o);
      }
    }
    frontier = next;
  }
  return seen;
}

function fedByPack(node) {
  return node.comfyClass?.startsWith(PACK_PREFIX) || inputOrigins(node).some(({ node: o }) =>
    o.comfyClass?.startsWith(PACK_PREFIX) || inputOrigins(o).some(({ node: p }) => p.comfyClass?.startsWith(PACK_PREFIX)));
}

function showsDepth(node) {
  if (node.comfyClass === "SDL3D_SaveDepthPNG16") return true;
  let current = node; // follow a single-input chain (e.g. PreviewImage <- MaskToImage <- depth) two steps up
  for (let i = 0; i < 2; i++) {
    const origins = inputOrigins(current);
    if (origins.length !== 1) return false;
    const { node: o, slot } = origins[0];
    if (/depth/i.test(o.outputs?.[slot]?.name ?? "")) return true;
    current = o;
  }
  return false;
}

/** The image of a depth-showing node of the same graph that shares an upstream node with `host`. */
function findDepth(host) {
  if (showsDepth(host)) return null;
  const mine = ancestors(host);
  const graph = host.graph ?? app.graph;
  let best = null;
  for (const other of graph._nodes ?? graph.nodes ?? []) {
    if (other === host || !IMAGE_NODES.has(other.comfyClass ?? other.type)) continue;
    const images = state.outputs.get(String(other.id))?.images;
    if (!images?.length || !showsDepth(other)) continue;
    const shared = [...ancestors(other).keys()].filter((k) => mine.has(k)).length;
    if (shared && (!best || shared > best.shared)) best = { shared, info: images[0] };
  }
  return best ? imageUrl(best.info) : null;
}

function button(label, title, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.title = title;
  b.style.cssText = "font:12px sans-serif;padding:2px 6px;border-radius:4px;border:1px solid #666;"
    + "background:#333;color:#ddd;cursor:pointer;";
  b.addEventListener("click", (e) => { e.stopPropagation(); onClick(b); });
  return b;
}

function makePanel(node) {
  const root = document.createElement("div");
  root.className = "sdl3d-viewer360";
  root.dataset.nodeType = node.comfyClass ?? node.type;
  root.dataset.nodeId = String(node.id);
  root.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;height:100%;box-sizing:border-box;";
  const bar = document.createElement("div");
  bar.className = "sdl3d-viewer360-bar";
  bar.style.cssText = "display:flex;gap:4px;align-items:center;flex-wrap:wrap;";
  const view = document.createElement("div");
  view.className = "sdl3d-viewer360-view";
  view.style.cssText = "flex:1;min-height:120px;border-radius:6px;overflow:hidden;background:#111;";
  root.append(bar, view);
  const viewer = new Viewer360(view);
  const eyeSelect = document.createElement("select");
  eyeSelect.className = "sdl3d-viewer360-eye";
  eyeSelect.title = "Stereo: which eye to show, or a red-cyan anaglyph";
  eyeSelect.style.cssText = "font:12px sans-serif;background:#333;color:#ddd;border:1px solid #666;border-radius:4px;";
  for (const eye of ["left", "right", "anaglyph"]) eyeSelect.append(new Option(eye, eye));
  eyeSelect.addEventListener("change", () => viewer.setEye(eyeSelect.value));
  eyeSelect.addEventListener("pointerdown", (e) => e.stopPropagation());
  const depthBtn = button("depth", "Show the depth of this picture (from the depth shown elsewhere in the graph)", (b) => {
    viewer.setShowDepth(!viewer.showDepth);
    b.style.background = viewer.showDepth ? "#2a6" : "#333";
  });
  depthBtn.className = "sdl3d-viewer360-depth";
  const resetBtn = button("reset", "Look straight ahead, default zoom", () => viewer.reset());
  resetBtn.className = "sdl3d-viewer360-reset";
  const hint = document.createElement("span");
  hint.textContent = "drag to look, wheel to zoom";
  hint.style.cssText = "font:11px sans-serif;color:#999;margin-left:auto;";
  bar.append(eyeSelect, depthBtn, resetBtn, hint);
  viewer.vrButton().then((b) => { if (b) { b.classList.add("sdl3d-viewer360-vr"); bar.insertBefore(b, hint); } });
  return { root, viewer, eyeSelect, depthBtn };
}

async function showViewer(node, output) {
  const images = output?.images;
  if (!images?.length || !fedByPack(node)) return;
  if (state.webgl === null) state.webgl = hasWebGL();
  if (!state.webgl) {
    node.sdl3dViewerState = "no-webgl";
    console.info("[syncdiffusion-ldm3d] WebGL is not available: 360 view off, the plain preview stays.");
    return;
  }
  const colorUrl = imageUrl(images[0]);
  const layout = layoutOf(await measure(colorUrl), declaredLayout(node, images[0]));
  node.sdl3dViewerState = layout ?? "not-360"; // what the last image was taken for (read by the browser tests)
  if (!layout) return;
  if (!node.sdl3dViewer) {
    const panel = makePanel(node);
    const widget = node.addDOMWidget("viewer360", "sdl3d_viewer360", panel.root, {
      serialize: false, hideOnZoom: false, getMinHeight: () => PANEL_HEIGHT, getHeight: () => PANEL_HEIGHT,
    });
    widget.serialize = false;
    node.sdl3dViewer = panel;
    const onRemoved = node.onRemoved;
    node.onRemoved = function () { panel.viewer.dispose(); return onRemoved?.apply(this, arguments); };
    // the frontend adds its preview widget when it draws a node with images: hide it as soon as it is there
    const onDrawForeground = node.onDrawForeground;
    node.onDrawForeground = function () { hidePlainPreview(this); return onDrawForeground?.apply(this, arguments); };
    hidePlainPreview(node);
    const [w, h] = node.size;
    node.setSize([Math.max(w, PANEL_MIN_WIDTH), Math.max(h, node.computeSize()[1])]);
    node.setDirtyCanvas?.(true, true);
  }
  const panel = node.sdl3dViewer;
  const depthUrl = findDepth(node);
  panel.eyeSelect.style.display = layout === "mono" ? "none" : "";
  panel.depthBtn.style.display = depthUrl ? "" : "none";
  await panel.viewer.setSource({ colorUrl, layout, depthUrl });
  panel.eyeSelect.value = ["left", "right", "anaglyph"][panel.viewer.eye];
}

/** The viewer takes the plain preview's room: hide the frontend's preview widget (the image stays in node.imgs for
 * "Open Image" / "Save Image"). A batch keeps its plain preview grid, since the viewer shows the first image only. */
function hidePlainPreview(node) {
  const preview = node.widgets?.find((w) => w.name === PLAIN_PREVIEW);
  const hide = !!node.sdl3dViewer && (node.imgs?.length ?? 1) <= 1;
  if (!preview || !!preview.hidden === hide) return;
  preview.hidden = hide; // honoured by frontend >= 1.35's layout; 1.32 lays out hidden widgets too, so also no room:
  if (hide) {
    preview.sdl3dOwn = { computeLayoutSize: preview.computeLayoutSize, computeSize: preview.computeSize };
    if (preview.computeLayoutSize) preview.computeLayoutSize = () => ({ minHeight: 0, maxHeight: 0, minWidth: 1 });
    if (preview.computeSize) preview.computeSize = () => [0, 0];
  } else if (preview.sdl3dOwn) {
    Object.assign(preview, preview.sdl3dOwn);
    delete preview.sdl3dOwn;
  }
  const [w, h] = node.size;
  const [, minH] = node.computeSize();
  // hidden: back to the size before the run (what the layout planned) unless the viewer needs more
  node.setSize([w, hide ? Math.max(minH, node.sdl3dSizeBefore?.[1] ?? minH) : Math.max(h, minH)]);
  node.setDirtyCanvas?.(true, true);
}

/** A depth preview may finish after the colour one: give viewers without depth a second look. */
function refreshDepth() {
  for (const node of app.graph?._nodes ?? []) {
    const panel = node.sdl3dViewer;
    if (!panel || panel.viewer.hasDepth) continue;
    const url = findDepth(node);
    if (url) panel.viewer.setDepth(url).then((ok) => { if (ok) panel.depthBtn.style.display = ""; });
  }
}

/** The model the mesh node saved last (what its model_file output carried), from its "3d" UI output. */
function lastModelFile(node) {
  const model = state.outputs.get(String(node.id))?.["3d"]?.[0];
  if (!model?.filename) return null;
  return model.subfolder ? `${model.subfolder}/${model.filename}` : model.filename;
}

/** Wire ComfyUI's own Preview3D node to the mesh node's model_file output (once; a second click re-uses it). When
 * the mesh exists already, Preview3D is told to show it right away (its "Last Time Model File" property, which it
 * loads when it is created, as after a reload); else it shows the mesh on the next run. Nothing is queued here. */
function openInPreview3D(node) {
  const graph = node.graph ?? app.graph;
  const slot = node.outputs?.findIndex((o) => o.name === "model_file") ?? -1;
  if (slot < 0) return null;
  const linked = (node.outputs[slot].links ?? []).map((id) => graph.links?.[id] ?? graph.links?.get?.(id))
    .map((l) => l && graph.getNodeById(l.target_id)).find((n) => n?.type === "Preview3D");
  if (linked) return linked;
  const preview = globalThis.LiteGraph.createNode("Preview3D");
  if (!preview) return null;
  const modelFile = lastModelFile(node);
  if (modelFile) {
    preview.properties ??= {};
    preview.properties["Last Time Model File"] = modelFile;
    const widget = preview.widgets?.find((w) => w.name === "model_file");
    if (widget) widget.value = modelFile;
  }
  preview.pos = [node.pos[0] + node.size[0] + 40, node.pos[1]];
  graph.add(preview);
  const input = preview.inputs?.findIndex((i) => i.name === "model_file") ?? -1;
  if (input >= 0) node.connect(slot, preview, input);
  node.setDirtyCanvas?.(true, true);
  return preview;
}

function addPreview3DButton(node) {
  const hasPreview3D = !!globalThis.LiteGraph?.registered_node_types?.Preview3D;
  if (!hasPreview3D || node.widgets?.some((w) => w.name === "open in 3D preview")) return;
  const widget = node.addWidget("button", "open in 3D preview", null, () => openInPreview3D(node), { serialize: false });
  widget.serialize = false; // never part of widgets_values
  widget.tooltip = "Show the saved mesh in ComfyUI's 3D preview (adds a Preview 3D node linked to model_file)";
}

app.registerExtension({
  name: "syncdiffusion-ldm3d.viewer360",
  setup() {
    api.addEventListener("executed", ({ detail }) => {
      if (detail?.node != null && detail.output) state.outputs.set(String(detail.node), detail.output);
      refreshDepth();
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!IMAGE_NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      this.sdl3dSizeBefore ??= [...this.size];
      const result = onExecuted?.apply(this, arguments);
      state.outputs.set(String(this.id), output);
      showViewer(this, output).catch((err) => console.warn("[syncdiffusion-ldm3d] 360 view:", err));
      return result;
    };
    if (nodeData.name === "SDL3D_SaveDepthMesh") {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        addPreview3DButton(this);
        return result;
      };
    }
  },
});
