/* nforge view: the viewer's page logic. Data: the JSON block #nforge-data (see nforge_jax/viz/view.py).
   The cortex (space "fsaverage5") is a plotly mesh; the subcortical volume (space "subcortical") is three
   canvases of orthogonal slices through a cursor voxel. document.body.dataset.{ready,frame,region,cursor}
   record what is drawn, for tests and scripts that drive the page. */
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
// what the page calls the points and regions of each space
const WORDS = {
  fsaverage5: {
    unit: 'vertex', units: 'vertices', region: 'area', none: 'medial wall (no area)', shape: 'the cortex',
    help: 'Hover the cortex for area names and values; click it for the area\u2019s time course.',
    prompt: 'Click the cortex to plot the time course of an HCP-MMP1 area'
  },
  subcortical: {
    unit: 'voxel', units: 'voxels', region: 'structure', none: 'no structure', shape: 'a slice',
    help: 'Hover a slice for structure names and values; click it to move the cursor and plot the structure\u2019s time course.',
    prompt: 'Click a structure in a slice to plot its time course'
  }
};

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
    this.words = WORDS[data.space];
    this.lutBytes = Uint8Array.from(atob(data.lut), c => c.charCodeAt(0));
    this.step = (this.vmax - this.vmin) / 254;
    this.frame = 0;
    this.region = -1;
    this.playing = false;
    const counts = new Int32Array(data.region_names.length);
    for (const a of arrays.region_of) if (a >= 0) counts[a]++;
    this.region_counts = counts;
    this.display = data.space === 'subcortical' ? new VolumeDisplay(this) : new CortexDisplay(this);
  }

  code (t, p) { return this.codes[t * this.n_points + p]; }

  codeText (code) {
    // Codes are quantised to 255 levels: say so, and say when a value was clipped to the colour range.
    if (code === NAN_CODE) return 'no value';
    if (code === 0) return `\u2264 ${formatNumber(this.vmin + this.step / 2)}`;
    if (code === 254) return `\u2265 ${formatNumber(this.vmax - this.step / 2)}`;
    return `\u2248 ${formatNumber(this.vmin + code * this.step)}`;
  }

  regionName (p) {
    const a = this.region_of[p];
    return a < 0 ? this.words.none : this.region_names[a];
  }

  regionMeanText (p, t) {
    const a = this.region_of[p];
    return a < 0 ? '' : `${this.words.region} mean: ${formatNumber(this.region_means[a * this.n_frames + t])}`;
  }

  pointText (p) {
    return `${this.regionName(p)}, ${this.words.unit} ${p}: ${this.codeText(this.code(this.frame, p))}`;
  }

  drawTimecourse () {
    const layout = {
      margin: { l: 60, r: 20, t: 30, b: 40 }, showlegend: false,
      title: { text: this.words.prompt, font: { size: 13 } },
      xaxis: this.times
        ? { title: 'time (s)', type: 'linear', range: [this.times[0], this.times[this.n_frames - 1] + 1e-9] }
        : { title: '', type: 'category', range: [-0.5, this.n_frames - 0.5] },
      yaxis: { title: `${this.words.region} mean`, zeroline: true }
    };
    return Plotly.newPlot('timecourse', [], layout, { displaylogo: false, responsive: false });
  }

  xs () { return this.times || this.labels; }

  async showFrame (t) {
    this.frame = t;
    document.getElementById('frame-label').textContent = this.labels[t];
    await this.display.drawFrame(t);
    await this.moveMarker();
    await nextPaint();
    document.body.dataset.frame = String(t);
  }

  async moveMarker () {
    if (this.region < 0) return;
    const x = this.xs()[this.frame];
    const y = this.region_means[this.region * this.n_frames + this.frame];
    await Plotly.restyle('timecourse', { x: [[x]], y: [[Number.isFinite(y) ? y : null]] }, [1]);
  }

  async selectPoint (p) {
    const a = this.region_of[p];
    if (a < 0) {
      document.getElementById('hover-info').textContent = `${this.words.unit} ${p}: ${this.words.none}`;
      return;
    }
    this.region = a;
    const T = this.n_frames;
    const y = Array.from(this.region_means.subarray(a * T, (a + 1) * T), m => (Number.isFinite(m) ? m : null));
    // a line over time; separate points for named maps (their order means nothing)
    const line = {
      type: 'scatter', mode: this.times && T > 1 ? 'lines' : 'markers', x: this.xs(), y, name: this.region_names[a],
      line: { color: '#1f5fa8', width: 2 }, marker: { color: '#1f5fa8', size: 9 }, hoverinfo: 'x+y'
    };
    const marker = { type: 'scatter', mode: 'markers', x: [], y: [], marker: { color: '#d62728', size: 10 }, hoverinfo: 'skip' };
    const title = `${this.region_names[a]}: mean over its ${this.region_counts[a]} ${this.words.units}`;
    await Plotly.react('timecourse', [line, marker], Object.assign({}, document.getElementById('timecourse').layout,
      { title: { text: title, font: { size: 13 } } }));
    await this.moveMarker();
    await nextPaint();
    document.body.dataset.region = this.region_names[a];
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
    for (let c = 0; c < 255; c++) {
      img.data.set([this.lutBytes[3 * c], this.lutBytes[3 * c + 1], this.lutBytes[3 * c + 2], 255], 4 * c);
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
    document.getElementById('hover-info').textContent = this.words.help;
    slider.addEventListener('input', () => { this.showFrame(Number(slider.value)); });
    document.getElementById('play').addEventListener('click', () => { this.play(); });
    this.display.wire();
  }
}

class CortexDisplay {
  constructor (viewer) {
    this.viewer = viewer;
    this.lutColors = rgbStrings(viewer.lutBytes, 255);
    this.greyColors = Array.from(viewer.background, g => `rgb(${g},${g},${g})`);
  }

  frameStyle (t) {
    const vw = this.viewer;
    const V = vw.n_points;
    const codes = vw.codes.subarray(t * V, (t + 1) * V);
    const colors = new Array(V);
    const text = new Array(V);
    for (let v = 0; v < V; v++) {
      const c = codes[v];
      colors[v] = c === NAN_CODE ? this.greyColors[v] : this.lutColors[c];
      text[v] = `${vw.regionName(v)}<br>vertex ${v}: ${vw.codeText(c)}`;
      if (vw.region_of[v] >= 0) text[v] += `<br>${vw.regionMeanText(v, t)}`;
    }
    return { colors, text };
  }

  draw () {
    const vw = this.viewer;
    const V = vw.n_points;
    const F = vw.faces.length / 3;
    const x = new Array(V); const y = new Array(V); const z = new Array(V);
    for (let v = 0; v < V; v++) { x[v] = vw.coords[3 * v]; y[v] = vw.coords[3 * v + 1]; z[v] = vw.coords[3 * v + 2]; }
    const i = new Array(F); const j = new Array(F); const k = new Array(F);
    for (let f = 0; f < F; f++) { i[f] = vw.faces[3 * f]; j[f] = vw.faces[3 * f + 1]; k[f] = vw.faces[3 * f + 2]; }
    const style = this.frameStyle(0);
    const axis = { visible: false, showgrid: false, zeroline: false, showspikes: false };
    const mesh = {
      type: 'mesh3d', x, y, z, i, j, k, vertexcolor: style.colors, text: style.text, hoverinfo: 'text', flatshading: false,
      lighting: { ambient: 0.75, diffuse: 0.6, specular: 0.05, roughness: 0.6, fresnel: 0.1 }
    };
    const layout = {
      margin: { l: 0, r: 0, t: 0, b: 0 }, paper_bgcolor: '#fff', hovermode: 'closest', showlegend: false,
      scene: { xaxis: axis, yaxis: axis, zaxis: axis, aspectmode: 'data', camera: CAMERAS.top, dragmode: 'turntable' }
    };
    const config = { displaylogo: false, responsive: false, modeBarButtonsToRemove: ['hoverClosest3d'] };
    return Plotly.newPlot('brain', [mesh], layout, config);
  }

  drawFrame (t) {
    const style = this.frameStyle(t);
    return Plotly.restyle('brain', { vertexcolor: [style.colors], text: [style.text] }, [0]);
  }

  wire () {
    const vw = this.viewer;
    document.getElementById('view-choice').style.display = '';
    document.getElementById('view').addEventListener('change', e => {
      Plotly.relayout('brain', { 'scene.camera': CAMERAS[e.target.value] });
    });
    const brain = document.getElementById('brain');
    brain.on('plotly_click', ev => { if (ev.points.length) vw.selectPoint(ev.points[0].pointNumber); });
    brain.on('plotly_hover', ev => {
      if (!ev.points.length) return;
      document.getElementById('hover-info').textContent = `${vw.labels[vw.frame]}: ${vw.pointText(ev.points[0].pointNumber)}`;
    });
  }
}

const SCALE = 3; // screen pixels per 2 mm voxel
// Slices in neurological convention (left on the left), superior and anterior up, anterior right in sagittal.
// Each maps a cursor (i, j, k) and a pixel (h, r) of the slice to a voxel, and a voxel to its pixel.
const SLICES = [
  { name: 'axial', fixed: 2, axis: 'z', dims: s => [s[0], s[1]], ijk: (c, h, r, s) => [h, s[1] - 1 - r, c[2]], hr: (v, s) => [v[0], s[1] - 1 - v[1]], ends: ['L', 'R'] },
  { name: 'coronal', fixed: 1, axis: 'y', dims: s => [s[0], s[2]], ijk: (c, h, r, s) => [h, c[1], s[2] - 1 - r], hr: (v, s) => [v[0], s[2] - 1 - v[2]], ends: ['L', 'R'] },
  { name: 'sagittal', fixed: 0, axis: 'x', dims: s => [s[1], s[2]], ijk: (c, h, r, s) => [c[0], h, s[2] - 1 - r], hr: (v, s) => [v[1], s[2] - 1 - v[2]], ends: ['P', 'A'] }
];

class VolumeDisplay {
  constructor (viewer) {
    this.viewer = viewer;
    const [nx, ny, nz] = viewer.shape;
    this.pointAt = new Int32Array(nx * ny * nz).fill(-1); // grid voxel (row of the data) of each volume index
    for (let p = 0; p < viewer.n_points; p++) {
      const ijk = viewer.voxel_ijk.subarray(3 * p, 3 * p + 3);
      this.pointAt[(ijk[0] * ny + ijk[1]) * nz + ijk[2]] = p;
    }
    this.cursor = viewer.cursor.slice();
  }

  index (ijk) { const s = this.viewer.shape; return (ijk[0] * s[1] + ijk[1]) * s[2] + ijk[2]; }

  mm (ijk) {
    const a = this.viewer.affine;
    return [0, 1, 2].map(r => a[r][0] * ijk[0] + a[r][1] * ijk[1] + a[r][2] * ijk[2] + a[r][3]);
  }

  regionAt (idx) { const p = this.pointAt[idx]; return p < 0 ? -1 : this.viewer.region_of[p]; }

  draw () {
    const brain = document.getElementById('brain');
    brain.classList.add('volume');
    this.panels = SLICES.map(slice => {
      const [w, h] = slice.dims(this.viewer.shape);
      const figure = document.createElement('figure');
      const canvas = document.createElement('canvas');
      canvas.width = w * SCALE; canvas.height = h * SCALE; canvas.id = `slice-${slice.name}`;
      const caption = document.createElement('figcaption');
      figure.append(caption, canvas);
      brain.append(figure);
      const small = document.createElement('canvas'); // one pixel a voxel, scaled up without smoothing
      small.width = w; small.height = h;
      return { slice, canvas, caption, small, w, h };
    });
    const tip = document.createElement('div');
    tip.id = 'volume-tip'; tip.className = 'hovertext';
    brain.append(tip);
    this.tip = tip;
    return this.drawFrame(0);
  }

  drawFrame (t) {
    for (const panel of this.panels) this.drawPanel(panel, t);
    document.body.dataset.cursor = this.cursor.join(',');
  }

  drawPanel (panel, t) {
    const vw = this.viewer;
    const { slice, canvas, small, w, h } = panel;
    const s = vw.shape;
    const ctx = small.getContext('2d');
    const img = ctx.createImageData(w, h);
    const regions = new Int16Array(w * h);
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        const idx = this.index(slice.ijk(this.cursor, c, r, s));
        const p = this.pointAt[idx];
        const code = p < 0 ? NAN_CODE : vw.code(t, p);
        const o = 4 * (r * w + c);
        if (code === NAN_CODE) {
          const g = vw.anatomy[idx];
          img.data[o] = g; img.data[o + 1] = g; img.data[o + 2] = g;
        } else {
          img.data[o] = vw.lutBytes[3 * code]; img.data[o + 1] = vw.lutBytes[3 * code + 1]; img.data[o + 2] = vw.lutBytes[3 * code + 2];
        }
        img.data[o + 3] = 255;
        regions[r * w + c] = p < 0 ? -1 : vw.region_of[p];
      }
    }
    ctx.putImageData(img, 0, 0);
    const out = canvas.getContext('2d');
    out.imageSmoothingEnabled = false;
    out.drawImage(small, 0, 0, w * SCALE, h * SCALE);
    this.drawOutlines(out, regions, w, h);
    this.drawCursor(out, panel);
    const mm = this.mm(this.cursor)[slice.fixed];
    panel.caption.textContent = `${slice.name}, ${slice.axis} = ${Math.round(mm)} mm`;
  }

  drawOutlines (ctx, regions, w, h) {
    // a line on every voxel edge between two structures, or a structure and the outside
    ctx.beginPath();
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        const a = regions[r * w + c];
        if (c + 1 < w && a !== regions[r * w + c + 1]) { ctx.moveTo((c + 1) * SCALE, r * SCALE); ctx.lineTo((c + 1) * SCALE, (r + 1) * SCALE); }
        if (r + 1 < h && a !== regions[(r + 1) * w + c]) { ctx.moveTo(c * SCALE, (r + 1) * SCALE); ctx.lineTo((c + 1) * SCALE, (r + 1) * SCALE); }
      }
    }
    ctx.strokeStyle = 'rgba(255,255,255,0.85)';
    ctx.lineWidth = 1;
    ctx.stroke();
  }

  drawCursor (ctx, panel) {
    const [h, r] = panel.slice.hr(this.cursor, this.viewer.shape);
    const x = (h + 0.5) * SCALE; const y = (r + 0.5) * SCALE;
    ctx.strokeStyle = 'rgba(0,230,0,0.8)';
    ctx.beginPath();
    ctx.moveTo(x, 0); ctx.lineTo(x, y - 2 * SCALE); ctx.moveTo(x, y + 2 * SCALE); ctx.lineTo(x, panel.h * SCALE);
    ctx.moveTo(0, y); ctx.lineTo(x - 2 * SCALE, y); ctx.moveTo(x + 2 * SCALE, y); ctx.lineTo(panel.w * SCALE, y);
    ctx.stroke();
    ctx.fillStyle = '#ddd';
    ctx.font = '12px system-ui, sans-serif';
    ctx.fillText(panel.slice.ends[0], 4, 14);
    ctx.fillText(panel.slice.ends[1], panel.w * SCALE - 12, 14);
  }

  voxelAt (panel, event) {
    const box = panel.canvas.getBoundingClientRect();
    const c = Math.floor((event.clientX - box.left) / (box.width / panel.w));
    const r = Math.floor((event.clientY - box.top) / (box.height / panel.h));
    if (c < 0 || r < 0 || c >= panel.w || r >= panel.h) return null;
    return panel.slice.ijk(this.cursor, c, r, this.viewer.shape);
  }

  voxelText (ijk) {
    const vw = this.viewer;
    const p = this.pointAt[this.index(ijk)];
    const where = this.mm(ijk).map((v, i) => `${'xyz'[i]} ${Math.round(v)}`).join(', ') + ' mm';
    if (p < 0) return `outside the subcortical grid (${where})`;
    const mean = vw.regionMeanText(p, vw.frame);
    return `${vw.regionName(p)}\n${vw.words.unit} ${p} (${where}): ${vw.codeText(vw.code(vw.frame, p))}` + (mean ? `\n${mean}` : '');
  }

  wire () {
    const vw = this.viewer;
    for (const panel of this.panels) {
      panel.canvas.addEventListener('mousemove', ev => {
        const ijk = this.voxelAt(panel, ev);
        if (!ijk) return;
        const text = this.voxelText(ijk);
        this.tip.textContent = text;
        const box = document.getElementById('brain').getBoundingClientRect();
        this.tip.style.left = `${ev.clientX - box.left + 14}px`;
        this.tip.style.top = `${ev.clientY - box.top + 14}px`;
        this.tip.style.display = 'block';
        document.getElementById('hover-info').textContent = `${vw.labels[vw.frame]}: ${text.replace(/\n/g, ', ')}`;
      });
      panel.canvas.addEventListener('mouseleave', () => { this.tip.style.display = 'none'; });
      panel.canvas.addEventListener('click', ev => {
        const ijk = this.voxelAt(panel, ev);
        if (ijk) this.moveCursor(ijk);
      });
    }
  }

  async moveCursor (ijk) {
    this.cursor = ijk;
    this.drawFrame(this.viewer.frame);
    const p = this.pointAt[this.index(ijk)];
    if (p >= 0) await this.viewer.selectPoint(p);
    await nextPaint();
  }
}

async function main () {
  const data = JSON.parse(document.getElementById('nforge-data').textContent);
  const names = ['codes', 'region_of', 'region_means',
    ...(data.space === 'subcortical' ? ['voxel_ijk', 'anatomy'] : ['coords', 'faces', 'background'])];
  const arrays = {};
  for (const name of names) arrays[name] = await inflate(data[name]);
  if (arrays.codes.length !== data.n_frames * data.n_points) throw new Error('frame data has the wrong size');
  const N = data.n_points;
  for (let i = N; i < arrays.codes.length; i++) arrays.codes[i] += arrays.codes[i - N]; // undo time_deltas (wraps mod 256)
  document.getElementById('title').textContent = data.title;
  const viewer = new Viewer(data, arrays);
  viewer.drawColorbar();
  await viewer.display.draw();
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
