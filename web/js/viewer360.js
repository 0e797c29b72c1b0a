// Interactive 360 view of an equirectangular image (mono, top-bottom or side-by-side stereo, optional depth),
// built on three.js (web/lib/three.min.mjs, loaded on first use). No ComfyUI import: the extension in
// sdl3d_viewer360.js puts one of these inside a node.
//
// Conventions: the image centre (u = 0.5) is straight ahead at yaw 0; top-bottom stereo = left eye on top
// (the pack's _360_TB files), side-by-side = left eye on the left (_360_LR). Drag to look, wheel to zoom,
// reset() returns to yaw 0, pitch 0, 75 degree field of view.

const THREE_URL = new URL("../lib/three.min.mjs", import.meta.url).href;
let threePromise = null;

export function loadThree() {
  threePromise ??= import(THREE_URL);
  return threePromise;
}

/** True when this browser can make a WebGL context (else the node keeps its plain image preview). */
export function hasWebGL() {
  try {
    const c = document.createElement("canvas");
    return !!(window.WebGLRenderingContext && (c.getContext("webgl2") || c.getContext("webgl")));
  } catch {
    return false;
  }
}

export const LAYOUTS = { mono: 0, top_bottom: 1, side_by_side: 2 };
export const EYES = { left: 0, right: 1, anaglyph: 2 };

const VERTEX = /* glsl */ `
varying vec2 vUv;
void main() { vUv = uv; gl_Position = projectionMatrix * modelViewMatrix * vec4(position, 1.0); }`;

const FRAGMENT = /* glsl */ `
uniform sampler2D colorTex;
uniform sampler2D depthTex;
uniform int packing;  // 0 mono, 1 top-bottom (left on top), 2 side-by-side (left on the left)
uniform int eye;      // 0 left, 1 right, 2 red-cyan anaglyph
uniform bool showDepth;
varying vec2 vUv;
vec2 eyeUv(vec2 uv, int which) {
  if (packing == 1) return which == 0 ? vec2(uv.x, 0.5 + 0.5 * uv.y) : vec2(uv.x, 0.5 * uv.y);
  if (packing == 2) return which == 0 ? vec2(0.5 * uv.x, uv.y) : vec2(0.5 + 0.5 * uv.x, uv.y);
  return uv;
}
void main() {
  if (showDepth) { gl_FragColor = vec4(texture2D(depthTex, vUv).rgb, 1.0); return; }
  if (eye == 2 && packing != 0) {
    vec3 l = texture2D(colorTex, eyeUv(vUv, 0)).rgb;
    vec3 r = texture2D(colorTex, eyeUv(vUv, 1)).rgb;
    gl_FragColor = vec4(l.r, r.g, r.b, 1.0);
    return;
  }
  gl_FragColor = vec4(texture2D(colorTex, eyeUv(vUv, eye == 1 ? 1 : 0)).rgb, 1.0);
}`;

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.crossOrigin = "anonymous";
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load ${url}`));
    img.src = url;
  });
}

export class Viewer360 {
  /** @param {HTMLElement} host element the canvas is put in (its size is followed). */
  constructor(host) {
    this.host = host;
    this.yaw = 0;
    this.pitch = 0;
    this.fov = 75;
    this.layout = LAYOUTS.mono;
    this.eye = EYES.left;
    this.showDepth = false;
    this.ready = this._init();
  }

  async _init() {
    const THREE = await loadThree();
    this.THREE = THREE;
    const canvas = document.createElement("canvas");
    canvas.className = "sdl3d-viewer360-canvas";
    canvas.style.cssText = "width:100%;height:100%;display:block;cursor:grab;touch-action:none;";
    this.host.appendChild(canvas);
    this.canvas = canvas;
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(this.fov, 2, 0.1, 100);
    const geometry = new THREE.SphereGeometry(10, 96, 48);
    geometry.scale(-1, 1, 1); // view from inside
    const empty = new THREE.Texture();
    const makeMaterial = (eye) => new THREE.ShaderMaterial({
      uniforms: { colorTex: { value: empty }, depthTex: { value: empty }, packing: { value: 0 },
                  eye: { value: eye }, showDepth: { value: false } },
      vertexShader: VERTEX, fragmentShader: FRAGMENT, depthWrite: false,
    });
    // layer 0: the desktop view (eye chosen in the UI); layers 1 / 2: the left / right eye in WebXR
    this.mesh = new THREE.Mesh(geometry, makeMaterial(EYES.left));
    this.meshL = new THREE.Mesh(geometry, makeMaterial(EYES.left));
    this.meshR = new THREE.Mesh(geometry, makeMaterial(EYES.right));
    this.meshL.layers.set(1);
    this.meshR.layers.set(2);
    // u = 0.5 (the image centre) lies on -X in three's sphere; turn it to -Z, the camera's forward.
    for (const m of [this.mesh, this.meshL, this.meshR]) {
      m.rotation.y = -Math.PI / 2;
      this.scene.add(m);
    }
    this._bindInput();
    this.renderer.xr.enabled = true;
    this.renderer.xr.addEventListener("sessionstart", () => { this.mesh.visible = false; });
    this.renderer.xr.addEventListener("sessionend", () => { this.mesh.visible = true; this.render(); });
    this.renderer.setAnimationLoop(null);
    this._resizeObserver = new ResizeObserver(() => this.render());
    this._resizeObserver.observe(this.host);
    return this;
  }

  _bindInput() {
    let drag = null;
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, yaw: this.yaw, pitch: this.pitch };
      c.setPointerCapture(e.pointerId);
      c.style.cursor = "grabbing";
      e.stopPropagation();
      e.preventDefault();
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const degPerPx = this.fov / Math.max(1, c.clientHeight);
      this.yaw = drag.yaw - (e.clientX - drag.x) * degPerPx;
      this.pitch = Math.max(-89, Math.min(89, drag.pitch + (e.clientY - drag.y) * degPerPx));
      this.render();
      e.stopPropagation();
    });
    const end = (e) => {
      drag = null;
      c.style.cursor = "grab";
      if (c.hasPointerCapture?.(e.pointerId)) c.releasePointerCapture(e.pointerId);
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("wheel", (e) => {
      this.fov = Math.max(20, Math.min(110, this.fov + Math.sign(e.deltaY) * 5));
      this.render();
      e.preventDefault();
      e.stopPropagation();
    }, { passive: false });
  }

  async _texture(url) {
    const THREE = this.THREE;
    const tex = new THREE.Texture(await loadImage(url));
    tex.colorSpace = THREE.SRGBColorSpace;
    tex.minFilter = THREE.LinearFilter;
    tex.generateMipmaps = false;
    tex.needsUpdate = true;
    return tex;
  }

  /** Show `colorUrl` (layout: "mono" | "top_bottom" | "side_by_side"); `depthUrl` (optional) for the depth toggle. */
  async setSource({ colorUrl, layout = "mono", depthUrl = null }) {
    await this.ready;
    const color = await this._texture(colorUrl);
    const depth = depthUrl ? await this._texture(depthUrl).catch(() => null) : null;
    this.layout = LAYOUTS[layout] ?? 0;
    this.hasDepth = !!depth;
    if (!depth) this.showDepth = false;
    for (const m of [this.mesh, this.meshL, this.meshR]) {
      const u = m.material.uniforms;
      u.colorTex.value?.dispose?.();
      u.colorTex.value = color;
      u.depthTex.value = depth ?? color;
      u.packing.value = this.layout;
    }
    this.render();
  }

  /** Add or replace the depth picture behind the depth toggle. */
  async setDepth(depthUrl) {
    await this.ready;
    const depth = depthUrl ? await this._texture(depthUrl).catch(() => null) : null;
    if (!depth) return false;
    for (const m of [this.mesh, this.meshL, this.meshR]) m.material.uniforms.depthTex.value = depth;
    this.hasDepth = true;
    this.render();
    return true;
  }

  setEye(name) { this.eye = EYES[name] ?? 0; this.render(); }
  setShowDepth(on) { this.showDepth = !!on && !!this.hasDepth; this.render(); }
  reset() { this.yaw = 0; this.pitch = 0; this.fov = 75; this.render(); }

  render() {
    if (!this.renderer || this.renderer.xr.isPresenting) return;
    const w = Math.max(1, this.host.clientWidth), h = Math.max(1, this.host.clientHeight);
    const size = this.renderer.getSize(new this.THREE.Vector2());
    if (size.x !== w || size.y !== h) this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.fov = this.fov;
    this.camera.updateProjectionMatrix();
    const yaw = this.THREE.MathUtils.degToRad(this.yaw), pitch = this.THREE.MathUtils.degToRad(this.pitch);
    this.camera.rotation.set(pitch, -yaw, 0, "YXZ");
    const u = this.mesh.material.uniforms;
    u.eye.value = this.eye;
    u.showDepth.value = this.showDepth;
    for (const m of [this.meshL, this.meshR]) m.material.uniforms.showDepth.value = this.showDepth;
    this.renderer.render(this.scene, this.camera);
  }

  /** An "Enter VR" button element when WebXR immersive-vr is supported, else null. */
  async vrButton() {
    await this.ready;
    if (!navigator.xr?.isSessionSupported) return null;
    const ok = await navigator.xr.isSessionSupported("immersive-vr").catch(() => false);
    if (!ok) return null;
    const button = this.THREE.VRButton.createButton(this.renderer);
    button.style.position = "static";
    this.renderer.setAnimationLoop(() => {
      if (this.renderer.xr.isPresenting) this.renderer.render(this.scene, this.camera);
    });
    return button;
  }

  dispose() {
    this._resizeObserver?.disconnect();
    this.renderer?.setAnimationLoop(null);
    this.renderer?.dispose();
    this.canvas?.remove();
  }
}
