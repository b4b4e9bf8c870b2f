// Hand-off to desktop VO tools (TOPCAT, Aladin, DS9) over the SAMP 1.3 Web Profile, with
// sampjs (static/vendor/samp.js, the global `samp`). The page registers with the hub on the
// user's machine at the first click (the hub asks the user to accept), then broadcasts each
// message to every client subscribed to its MType. Receivers fetch the URLs themselves:
// they are absolute URLs of this service.
import { el, getJSON, token } from "./api.js";

const NAME = "vo-service";
let connector = null;

/** An absolute URL of this service for a page-relative one. */
export function absolute(url) {
  return new URL(url, document.baseURI).href;
}

function status(text, kind = "") {
  for (const slot of document.querySelectorAll(".samp-status")) {
    slot.textContent = text;
    slot.dataset.kind = kind;
  }
}

function theConnector() {
  if (!window.samp) throw new Error("the SAMP library did not load");
  if (!connector) {
    connector = new window.samp.Connector(NAME, {
      "samp.name": NAME,
      "samp.description.text": "Image cutouts: catalog job manifests, FITS stamps, coverage MOCs",
      "samp.icon.url": absolute("static/favicon.svg"),
    });
    window.addEventListener("pagehide", () => connector.unregister());
  }
  return connector;
}

function faultText(error) {
  const text = String((error && (error.faultString || error.message)) || error || "");
  if (/rejected/i.test(text)) return "the SAMP hub (or you) refused the registration";
  return "no SAMP hub answered at localhost:21012: start TOPCAT or Aladin, then try again";
}

/** Broadcast [mtype, params] messages (params: strings only, as SAMP wants); resolves to
 * the number of clients that received the last one. */
export function send(messages, what) {
  if (token()) {
    status("this service needs an access token, which desktop tools cannot send: they will "
      + "not be able to fetch what the page sends", "warning");
  }
  return new Promise((resolve, reject) => {
    let pending = messages.length;
    let receivers = 0;
    try {
      theConnector().runWithConnection((connection) => {
        for (const [mtype, params] of messages) {
          connection.notifyAll([new window.samp.Message(mtype, params)], (ids) => {
            receivers = Math.max(receivers, (ids || []).length);
            pending -= 1;
            if (pending === 0) {
              status(receivers ? `sent ${what} to ${receivers} SAMP client(s)`
                : `the hub has no client for ${mtype}`, receivers ? "ok" : "warning");
              resolve(receivers);
            }
          }, (error) => { status(faultText(error), "error"); reject(error); });
        }
      }, (error) => { status(faultText(error), "error"); reject(error); });
    } catch (error) {
      status(error.message, "error");
      reject(error);
    }
  });
}

// --- the messages ------------------------------------------------------------------------

function resultUrl(job, resultId) {
  return absolute(`async/${job.job_id}/results/${encodeURIComponent(resultId)}`);
}

function jobName(job) {
  return job.run_id || job.job_id;
}

/** The job's manifest to table viewers (table.load.votable). */
export function sendManifest(job) {
  const url = resultUrl(job, "manifest");
  return send([["table.load.votable", { url, "table-id": url, name: `${jobName(job)} manifest` }]],
    "the manifest");
}

/** The job's MOC of targets and stamps (coverage.load.moc.fits). */
export function sendJobCoverage(job) {
  return send([["coverage.load.moc.fits", { url: resultUrl(job, "coverage"),
    name: `${jobName(job)} targets and stamps` }]], "the job's MOC");
}

/** The archive's coverage MOC (coverage.load.moc.fits). */
export function sendArchiveCoverage() {
  return send([["coverage.load.moc.fits", { url: absolute("coverage"), name: "vo-service coverage" }]],
    "the archive coverage");
}

/** FITS stamps to image viewers (image.load.fits), one message each. */
export function sendStamps(job, stamps, label) {
  // a tile's catalog rows (band "") are a table, not an image for image.load.fits
  const fits = stamps.filter((s) => s.result_id && s.content_type === "application/fits"
    && s.band !== "");
  if (!fits.length) { status(`${label} has no FITS stamp`, "warning"); return Promise.resolve(0); }
  return send(fits.map((s) => ["image.load.fits", { url: resultUrl(job, s.result_id),
    "image-id": resultUrl(job, s.result_id), name: `${label} ${s.band || ""} ${s.product_type || ""}`.trim() }]),
  fits.length === 1 ? "the stamp" : `${fits.length} stamps`);
}

const skies = new Map();

/** The job's targets with their manifest rows (fetched once per job). */
export async function jobSky(job) {
  if (!skies.has(job.job_id)) skies.set(job.job_id, getJSON(`api/jobs/${job.job_id}/sky`));
  return skies.get(job.job_id);
}

/** Highlight a target: its manifest row (table.highlight.row) and its position
 * (coord.pointAt.sky). */
export async function highlight(job, row) {
  const target = (await jobSky(job)).targets.find((t) => t.row === row);
  if (!target) { status(`target row ${row} has no position`, "warning"); return 0; }
  const url = resultUrl(job, "manifest");
  return send([["table.highlight.row", { "table-id": url, url, row: String(target.manifest_index) }],
    ["coord.pointAt.sky", { ra: String(target.ra), dec: String(target.dec) }]],
  `target ${target.target_id}`);
}

/** A small button that sends something over SAMP. */
export function sampButton(text, title, action, className = "") {
  return el("button", { type: "button", className: `small ghost samp ${className}`.trim(), textContent: text,
    title, onclick: (event) => { event.stopPropagation(); action().catch(() => {}); } });
}

/** The gallery's hand-off buttons and region-file links, for the job it shows. */
export function wireGallery(currentJob) {
  const on = (id, action) => document.getElementById(id).addEventListener("click", () => {
    const job = currentJob();
    if (job) action(job).catch(() => {});
  });
  on("samp-manifest", sendManifest);
  on("samp-job-moc", sendJobCoverage);
  document.getElementById("samp-archive-moc").addEventListener("click",
    () => sendArchiveCoverage().catch(() => {}));
}

/** Point the gallery's region-file links at ``job``. */
export function showJobLinks(job) {
  if (!job) return;
  document.getElementById("download-regions-ds9").href = `api/jobs/${job.job_id}/regions?FORMAT=ds9`;
  document.getElementById("download-regions-crtf").href = `api/jobs/${job.job_id}/regions?FORMAT=crtf`;
  document.getElementById("download-job-moc").href = `async/${job.job_id}/results/coverage`;
}
