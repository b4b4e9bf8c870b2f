// The sky view: the archive's footprints, and a job's targets and stamp footprints, drawn on
// the sky by Aladin Lite (static/vendor/aladin-lite, loaded when the view first scrolls into
// sight). It needs nothing from outside the service: no remote HiPS background (survey: []),
// no HiPS list, no usage logging. "Images" lays the archive's own pictures (each image's
// /preview PNG with its WCS) under the footprints nearest the centre. A click on a target
// shows its stamps beside the view and centres the view on it.
import { el, getJSON, query, setImageSource, showError } from "./api.js";
import { absolute, jobSky, sampButton, sendStamps } from "./handoff.js";

const ALADIN = new URL("../vendor/aladin-lite/aladin.js", import.meta.url).href;
const FOOTPRINT_COLOUR = "#22d3ee";
const STAMP_COLOUR = "#facc15";
const TARGET_COLOUR = "#f43f5e";
const OPTIONS = {
  survey: [], hipsList: [], log: false, projection: "TAN", showReticle: false,
  showLayersControl: false, showGotoControl: false, showSimbadPointerControl: false,
  showCooGridControl: false, showSettingsControl: false, showShareControl: false,
  showProjectionControl: false, showFullscreenControl: false, showContextMenu: false,
  showFrame: true, showZoomControl: true,
};

/** Centre (ra, dec) and horizontal field of view (deg) that show every vertex of
 * `polygons` in a view `aspect` times wider than high. */
function framing(polygons, aspect = 1) {
  const points = polygons.flat();
  if (!points.length) return { ra: 0, dec: 0, fov: 180 };
  const ref = points[0][0];
  const ras = points.map(([ra]) => ra + (ra - ref > 180 ? -360 : ra - ref < -180 ? 360 : 0));
  const decs = points.map(([, dec]) => dec);
  const dec = (Math.min(...decs) + Math.max(...decs)) / 2;
  const ra = ((Math.min(...ras) + Math.max(...ras)) / 2 + 360) % 360;
  const width = (Math.max(...ras) - Math.min(...ras)) * Math.cos((dec * Math.PI) / 180);
  const height = Math.max(...decs) - Math.min(...decs);
  return { ra, dec, fov: Math.min(180, Math.max(width, height * aspect, 1 / 60) * 1.2) };
}

const CLUSTER_DEG = 2;
const MAX_IMAGES = 12; // previews laid on the sky at once (each a PNG of at most 1024 px)

function centreOf(vertices) {
  return framing([vertices]);
}

function separationDeg(a, b) {
  const rad = Math.PI / 180;
  const cos = Math.sin(a.dec * rad) * Math.sin(b.dec * rad)
    + Math.cos(a.dec * rad) * Math.cos(b.dec * rad) * Math.cos((a.ra - b.ra) * rad);
  return Math.acos(Math.min(1, Math.max(-1, cos))) / rad;
}

/** The footprints around the densest place (an archive may hold fields far apart: show
 * the one with most images first; zooming out shows the others). */
function densest(polygons) {
  const centres = polygons.map(centreOf);
  let best = [];
  for (const centre of centres) {
    const near = polygons.filter((_, k) => separationDeg(centre, centres[k]) < CLUSTER_DEG);
    if (near.length > best.length) best = near;
  }
  return best;
}

export class SkyView {
  constructor() {
    this.box = document.getElementById("sky-view");
    this.panel = document.getElementById("sky-target");
    this.filter = document.getElementById("sky-instrument");
    this.job = null;
    this.ready = null;
    this.imagesBox = document.getElementById("sky-images");
    this.imageLayers = [];
    this.filter.addEventListener("change", () => this.ready && this.ready.then(() => this.drawArchive()));
    this.imagesBox.addEventListener("change", () => this.ready && this.ready.then(() => this.drawImages()));
    const observer = new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) { observer.disconnect(); this.load(); }
    });
    observer.observe(this.box);
  }

  /** Fill the instrument filter from the archive's choices. */
  setChoices(choices) {
    const instruments = [...new Set((choices.instruments || []).map((i) => i.name))];
    this.filter.replaceChildren(el("option", { value: "" }, "every instrument"),
      ...instruments.map((name) => el("option", { value: name }, name)));
  }

  load() {
    if (!this.ready) {
      this.ready = this.start().catch((error) => {
        showError("error-sky", `the sky view cannot start: ${error.message}`);
        throw error;
      });
    }
    return this.ready;
  }

  async start() {
    const { default: A } = await import(ALADIN);
    await A.init;
    this.A = A;
    this.aladin = A.aladin(this.box, OPTIONS);
    this.footprints = A.graphicOverlay({ color: FOOTPRINT_COLOUR, lineWidth: 1.5, name: "archive footprints" });
    this.stamps = A.graphicOverlay({ color: STAMP_COLOUR, lineWidth: 1.5, name: "stamps" });
    this.targets = A.catalog({ name: "targets", sourceSize: 14, color: TARGET_COLOUR, shape: "cross" });
    this.aladin.addOverlay(this.footprints);
    this.aladin.addOverlay(this.stamps);
    this.aladin.addCatalog(this.targets);
    this.aladin.on("objectClicked", (object) => {
      if (object && object.data && object.data.row !== undefined) this.pick(object.data);
    });
    await this.drawArchive();
    if (this.job) await this.drawJob(this.job);
  }

  async drawArchive() {
    const instrument = this.filter.value;
    const data = await getJSON(`api/footprints?${query([["INSTRUMENT", instrument]])}`);
    this.footprints.removeAll();
    for (const footprint of data.footprints) {
      this.footprints.add(this.A.polygon(footprint.vertices.map((v) => [...v]), { name: footprint.label }));
    }
    const facts = document.getElementById("sky-facts");
    facts.textContent = `${data.total} footprint${data.total === 1 ? "" : "s"}`
      + (data.truncated ? ` (the first ${data.footprints.length} drawn)` : "");
    this.box.dataset.footprints = String(data.footprints.length);
    this.shown = data.footprints;
    if (!this.job) {
      const { ra, dec, fov } = framing(densest(data.footprints.map((f) => f.vertices)), this.aspect());
      this.aladin.gotoRaDec(ra, dec);
      this.aladin.setFoV(fov);
    }
  }

  /** The archive's own pictures under the footprints nearest the view centre: each
   * image's /preview PNG placed with the WCS of that preview (api/preview-wcs). */
  async drawImages() {
    for (const name of this.imageLayers) this.aladin.removeImageLayer(name);
    this.imageLayers = [];
    this.box.dataset.images = "0";
    if (!this.imagesBox.checked) return;
    const [ra, dec] = this.aladin.getRaDec();
    const nearest = (this.shown || []).filter((f) => f.type === "image")
      .map((f) => ({ f, distance: separationDeg({ ra, dec }, centreOf(f.vertices)) }))
      .sort((a, b) => a.distance - b.distance).slice(0, MAX_IMAGES).map(({ f }) => f);
    let drawn = 0;
    for (const [k, footprint] of nearest.entries()) {
      const id = encodeURIComponent(footprint.image_id);
      let wcs;
      try {
        wcs = await getJSON(`api/preview-wcs?ID=${id}`);
      } catch (error) {
        continue; // no celestial WCS: nothing to place
      }
      const name = `image-${k}`;
      const image = this.A.image(absolute(`preview?ID=${id}`), { name: footprint.label, imgFormat: "png", wcs,
        successCallback: () => { drawn += 1; this.box.dataset.images = String(drawn); } });
      this.aladin.setOverlayImageLayer(image, name);
      this.imageLayers.push(name);
    }
  }

  /** Show a job's targets and stamp footprints (or only the archive for null). */
  async showJob(job) {
    this.job = job;
    if (this.aladin) await this.drawJob(job);
  }

  async drawJob(job) {
    this.stamps.removeAll();
    this.targets.removeAll();
    this.panel.replaceChildren();
    if (!job) { this.box.dataset.targets = "0"; return; }
    let sky;
    try {
      sky = await jobSky(job);
    } catch (error) {
      this.box.dataset.targets = "0";
      return; // a job without a manifest yet: nothing of its own to draw
    }
    for (const stamp of sky.stamps) this.stamps.add(this.A.polygon(stamp.vertices.map((v) => [...v])));
    this.targets.addSources(sky.targets.map((t) => this.A.source(t.ra, t.dec, { ...t })));
    this.box.dataset.targets = String(sky.targets.length);
    document.getElementById("sky-job").textContent =
      `${job.run_id || job.job_id}: ${sky.targets.length} targets, ${sky.stamps.length} stamp footprints`;
    if (sky.targets.length) {
      const { ra, dec, fov } = framing([sky.targets.map((t) => [t.ra, t.dec]),
        ...sky.stamps.map((s) => s.vertices)], this.aspect());
      this.aladin.gotoRaDec(ra, dec);
      this.aladin.setFoV(fov);
    }
  }

  aspect() {
    return this.box.clientWidth / Math.max(1, this.box.clientHeight);
  }

  /** Pixel position of a sky position in the view (for tests and the pointer). */
  pixelOf(ra, dec) {
    return this.aladin ? this.aladin.world2pix(ra, dec) : null;
  }

  /** The stamps of a clicked target beside the view. */
  async pick(target) {
    const job = this.job;
    const page = await getJSON(`api/jobs/${job.job_id}/gallery?OFFSET=${target.target_index}&LIMIT=1`);
    const found = (page.targets || [])[0];
    if (!found) return;
    const stamps = [];
    for (const column of page.columns) {
      for (const stamp of found.cells[column.key] || []) {
        if (stamp.result_id && stamp.content_type === "application/fits" && column.band) {
          stamps.push({ ...stamp, band: column.band, product_type: column.product_type });
          break;
        }
      }
    }
    const figures = stamps.map((stamp) => {
      const img = el("img", { className: "thumb", alt: `${found.target_id} ${stamp.band} ${stamp.product_type}` });
      setImageSource(img, `api/jobs/${job.job_id}/thumb/${encodeURIComponent(stamp.result_id)}?SIZE=128`);
      return el("figure", {}, img, el("figcaption", {}, `${stamp.band} ${stamp.product_type}`));
    });
    this.panel.replaceChildren(
      el("h3", {}, found.target_id),
      el("p", { className: "muted" }, `${found.ra.toFixed(5)} ${found.dec.toFixed(5)}`),
      el("div", { className: "sky-stamps" }, ...figures),
      sampButton("Stamps → SAMP", "send these FITS stamps to Aladin or DS9 (image.load.fits)",
        () => sendStamps(job, stamps, found.target_id), "samp-stamps"));
    this.panel.dataset.row = String(target.row);
    this.aladin.gotoRaDec(found.ra, found.dec);
  }
}
