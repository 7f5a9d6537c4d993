/* nforge view: the cortex viewer's page logic. Data: the JSON block #nforge-data (see nforge_jax/viz/view.py).
   document.body.dataset.{ready,frame,area} record what is drawn, for tests and scripts that drive the page. */
'use strict';

const NAN_CODE = 255;
const CAMERAS = {
  top: { eye: { x: 0, y: -0.1, z: 1.5 }, up: { x: 0, y: 1, z: 0 } },
  back: { eye: { x: 0, y: -2.0, z: 0.3 }, up: { x: 0, y: 0, z: 1 } },
  front: { eye: { x: 0, y: 2.0, z: 0.3 }, up: { x: 0, y: 0, z: 1 } },
  left: { eye: { x: -2.0, y: 0, z: 0.2 }, up: { x: 0, y: 0, z: 1 } },
  right: { eye: { x: 2.0, y: 0, z: 0.2 }, up: { x: 0, y: 0, z: 1 } },
  bottom: { eye: { x: 0, y: -0.1, z: -1.5 }, up: { x: 0, y: 1, z: 0 } }
};
const TYPES = { uint8: Uint8Array, int16: Int16Array, int32: Int32Array, float32: Float32Array };

async function inflate (packed) {
  // gzip + base64 (view.py's _packed) -> typed array; the bytes are little-endian like every browser's host.
  const binary = atob(packed.gz);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
  const buffer = await new Response(stream).arrayBuffer();
  return new TYPES[packed.dtype](buffer);
}

function rgbStrings (bytes, count) {
  const out = new Array(count);
  for (let i = 0; i < count; i++) out[i] = `rgb(${bytes[3 * i]},${bytes[3 * i + 1]},${bytes[3 * i + 2]})`;
  return out;
}

function nextPaint () {
  // resolves once the browser has drawn the current state (plotly renders WebGL on animation frames)
  return new Promise(resolve => requestAnimationFrame(() => requestAnimationFrame(resolve)));
}

function formatNumber (x) {
  if (!Number.isFinite(x)) return 'no value';
  return Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(2) : x.toPrecision(3);
}

class Viewer {
  constructor (data, arrays) {
    Object.assign(this, data, arrays);
    this.lutColors = rgbStrings(Uint8Array.from(atob(data.lut), c => c.charCodeAt(0)), 255);
    this.greyColors = Array.from(this.background, g => `rgb(${g},${g},${g})`);
    this.step = (this.vmax - this.vmin) / 254;
    this.frame = 0;
    this.area = -1;
    this.playing = false;
  }

  codeText (code) {
    // Codes are quantised to 255 levels: say so, and say when a value was clipped to the colour range.
    if (code === NAN_CODE) return 'no value';
    if (code === 0) return `\u2264 ${formatNumber(this.vmin + this.step / 2)}`;
    if (code === 254) return `\u2265 ${formatNumber(this.vmax - this.step / 2)}`;
    return `\u2248 ${formatNumber(this.vmin + code * this.step)}`;
  }

  areaName (v) {
    const a = this.area_of_vertex[v];
    return a < 0 ? 'medial wall (no area)' : this.area_names[a];
  }

  frameStyle (t) {
    const V = this.n_vertices;
    const codes = this.codes.subarray(t * V, (t + 1) * V);
    const colors = new Array(V);
    const text = new Array(V);
    for (let v = 0; v < V; v++) {
      const c = codes[v];
      colors[v] = c === NAN_CODE ? this.greyColors[v] : this.lutColors[c];
      text[v] = `${this.areaName(v)}<br>vertex ${v}: ${this.codeText(c)}`;
      const a = this.area_of_vertex[v];
      if (a >= 0) text[v] += `<br>area mean: ${formatNumber(this.area_means[a * this.n_frames + t])}`;
    }
    return { colors, text };
  }

  drawBrain () {
    const V = this.n_vertices;
    const F = this.faces.length / 3;
    const x = new Float32Array(V); const y = new Float32Array(V); const z = new Float32Array(V);
    for (let v = 0; v < V; v++) { x[v] = this.coords[3 * v]; y[v] = this.coords[3 * v + 1]; z[v] = this.coords[3 * v + 2]; }
    const i = new Int32Array(F); const j = new Int32Array(F); const k = new Int32Array(F);
    for (let f = 0; f < F; f++) { i[f] = this.faces[3 * f]; j[f] = this.faces[3 * f + 1]; k[f] = this.faces[3 * f + 2]; }
    const style = this.frameStyle(0);
    const axis = { visible: false, showgrid: false, zeroline: false, showspikes: false };
    const mesh = {
      type: 'mesh3d', x: Array.from(x), y: Array.from(y), z: Array.from(z), i: Array.from(i), j: Array.from(j), k: Array.from(k),
      vertexcolor: style.colors, text: style.text, hoverinfo: 'text', flatshading: false,
      lighting: { ambient: 0.75, diffuse: 0.6, specular: 0.05, roughness: 0.6, fresnel: 0.1 }
    };
    const layout = {
      margin: { l: 0, r: 0, t: 0, b: 0 }, paper_bgcolor: '#fff', hovermode: 'closest', showlegend: false,
      scene: { xaxis: axis, yaxis: axis, zaxis: axis, aspectmode: 'data', camera: CAMERAS.top, dragmode: 'turntable' }
    };
    const config = { displaylogo: false, responsive: false, modeBarButtonsToRemove: ['hoverClosest3d'] };
    return Plotly.newPlot('brain', [mesh], layout, config);
  }

  drawTimecourse () {
    const layout = {
      margin: { l: 60, r: 20, t: 30, b: 40 }, showlegend: false,
      title: { text: 'Click the cortex to plot the time course of an HCP-MMP1 area', font: { size: 13 } },
      xaxis: this.times
        ? { title: 'time (s)', type: 'linear', range: [this.times[0], this.times[this.n_frames - 1] + 1e-9] }
        : { title: '', type: 'category', range: [-0.5, this.n_frames - 0.5] },
      yaxis: { title: 'area mean', zeroline: true }
    };
    return Plotly.newPlot('timecourse', [], layout, { displaylogo: false, responsive: false });
  }

  xs () { return this.times || this.labels; }

  async showFrame (t) {
    this.frame = t;
    const style = this.frameStyle(t);
    document.getElementById('frame-label').textContent = this.labels[t];
    await Plotly.restyle('brain', { vertexcolor: [style.colors], text: [style.text] }, [0]);
    await this.moveMarker();
    await nextPaint();
    document.body.dataset.frame = String(t);
  }

  async moveMarker () {
    if (this.area < 0) return;
    const x = this.xs()[this.frame];
    const y = this.area_means[this.area * this.n_frames + this.frame];
    await Plotly.restyle('timecourse', { x: [[x]], y: [[Number.isFinite(y) ? y : null]] }, [1]);
  }

  async selectVertex (v) {
    const a = this.area_of_vertex[v];
    if (a < 0) {
      document.getElementById('hover-info').textContent = `vertex ${v}: medial wall, no HCP-MMP1 area`;
      return;
    }
    this.area = a;
    const T = this.n_frames;
    const y = Array.from(this.area_means.subarray(a * T, (a + 1) * T), m => (Number.isFinite(m) ? m : null));
    // a line over time; separate points for named maps (their order means nothing)
    const line = {
      type: 'scatter', mode: this.times && T > 1 ? 'lines' : 'markers', x: this.xs(), y, name: this.area_names[a],
      line: { color: '#1f5fa8', width: 2 }, marker: { color: '#1f5fa8', size: 9 }, hoverinfo: 'x+y'
    };
    const marker = { type: 'scatter', mode: 'markers', x: [], y: [], marker: { color: '#d62728', size: 10 }, hoverinfo: 'skip' };
    const n = this.area_vertex_counts[a];
    await Plotly.react('timecourse', [line, marker], Object.assign({}, document.getElementById('timecourse').layout,
      { title: { text: `${this.area_names[a]}: mean over its ${n} vertices`, font: { size: 13 } } }));
    await this.moveMarker();
    await nextPaint();
    document.body.dataset.area = this.area_names[a];
  }

  async play () {
    const button = document.getElementById('play');
    const slider = document.getElementById('slider');
    this.playing = !this.playing;
    button.innerHTML = this.playing ? '&#10074;&#10074; pause' : '&#9654; play';
    while (this.playing) {
      const t = (this.frame + 1) % this.n_frames;
      slider.value = String(t);
      const started = performance.now();
      await this.showFrame(t);
      await new Promise(resolve => setTimeout(resolve, Math.max(0, 250 - (performance.now() - started))));
    }
  }

  drawColorbar () {
    const canvas = document.getElementById('colorbar');
    const ctx = canvas.getContext('2d');
    const img = ctx.createImageData(255, 1);
    const lut = Uint8Array.from(atob(this.lut), c => c.charCodeAt(0));
    for (let c = 0; c < 255; c++) {
      img.data.set([lut[3 * c], lut[3 * c + 1], lut[3 * c + 2], 255], 4 * c);
    }
    ctx.putImageData(img, 0, 0);
    document.getElementById('cb-min').textContent = formatNumber(this.vmin);
    document.getElementById('cb-max').textContent = formatNumber(this.vmax);
  }

  wireControls () {
    const slider = document.getElementById('slider');
    slider.max = String(this.n_frames - 1);
    document.getElementById('controls').style.visibility = this.n_frames > 1 ? 'visible' : 'hidden';
    document.getElementById('frame-label').textContent = this.labels[0];
    slider.addEventListener('input', () => { this.showFrame(Number(slider.value)); });
    document.getElementById('play').addEventListener('click', () => { this.play(); });
    document.getElementById('view').addEventListener('change', e => {
      Plotly.relayout('brain', { 'scene.camera': CAMERAS[e.target.value] });
    });
    const brain = document.getElementById('brain');
    brain.on('plotly_click', ev => { if (ev.points.length) this.selectVertex(ev.points[0].pointNumber); });
    brain.on('plotly_hover', ev => {
      if (!ev.points.length) return;
      const v = ev.points[0].pointNumber;
      document.getElementById('hover-info').textContent = `${this.labels[this.frame]}: ${this.vertexText(v)}`;
    });
  }

  vertexText (v) {
    const c = this.codes[this.frame * this.n_vertices + v];
    return `${this.areaName(v)}, vertex ${v}: ${this.codeText(c)}`;
  }
}

async function main () {
  const data = JSON.parse(document.getElementById('nforge-data').textContent);
  const names = ['coords', 'faces', 'background', 'codes', 'area_of_vertex', 'area_means'];
  const arrays = {};
  for (const name of names) arrays[name] = await inflate(data[name]);
  if (arrays.codes.length !== data.n_frames * data.n_vertices) throw new Error('frame data has the wrong size');
  const V = data.n_vertices;
  for (let i = V; i < arrays.codes.length; i++) arrays.codes[i] += arrays.codes[i - V]; // undo time_deltas (wraps mod 256)
  const counts = new Int32Array(data.area_names.length);
  for (const a of arrays.area_of_vertex) if (a >= 0) counts[a]++;
  arrays.area_vertex_counts = counts;
  document.getElementById('title').textContent = data.title;
  const viewer = new Viewer(data, arrays);
  viewer.drawColorbar();
  await viewer.drawBrain();
  await viewer.drawTimecourse();
  viewer.wireControls();
  document.getElementById('status').textContent = '';
  await nextPaint();
  document.body.dataset.frame = '0';
  document.body.dataset.ready = '1';
  window.nforgeViewer = viewer;
}

main().catch(err => {
  document.getElementById('status').textContent = `The viewer could not start: ${err}`;
  console.error(err);
});
