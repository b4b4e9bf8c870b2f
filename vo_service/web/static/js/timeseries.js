// The single-target form's "every epoch" view: a time-series UWS job on /async (SERIES),
// then a strip of stamps in time order (with the epochs that have none, and why) and the
// light curve plot. The job is an ordinary UWS job: it appears in the job list too.
import { authFetch, downloadWithToken, el, errorMessage, query, setImageSource } from "./api.js";
import { enlargeOnClick } from "./viewer.js";

const FINAL = new Set(["COMPLETED", "ERROR", "ABORTED"]);

function texts(doc, name) {
  return [...doc.getElementsByTagNameNS("*", name)];
}

/** Result id -> URL of a UWS job document. */
function resultsOf(doc) {
  const found = {};
  for (const node of texts(doc, "result")) {
    found[node.getAttribute("id")] = node.getAttributeNS("http://www.w3.org/1999/xlink", "href");
  }
  return found;
}

/** Rows of the first TABLE of a VOTable as objects keyed by FIELD name. */
function votableRows(doc) {
  const names = texts(doc, "FIELD").map((field) => field.getAttribute("name"));
  return texts(doc, "TR").map((row) => {
    const cells = [...row.getElementsByTagNameNS("*", "TD")].map((cell) => cell.textContent);
    return Object.fromEntries(names.map((name, n) => [name, cells[n] ?? ""]));
  });
}

async function xml(url) {
  const response = await authFetch(url);
  if (!response.ok) throw new Error(await errorMessage(response));
  return new DOMParser().parseFromString(await response.text(), "application/xml");
}

function mjdToDate(mjd) {
  const days = Number(mjd);
  if (!Number.isFinite(days)) return "time unknown";
  return new Date((days - 40587) * 86400000).toISOString().slice(0, 10);
}

export class TimeSeriesView {
  constructor() {
    this.strip = document.getElementById("series-strip");
    this.plot = document.getElementById("series-plot");
    this.facts = document.getElementById("series-facts");
    this.section = document.getElementById("series-results");
  }

  clear() {
    this.section.hidden = true;
    this.strip.replaceChildren();
    this.plot.removeAttribute("src");
    this.facts.textContent = "";
  }

  /** Run a time series of (ra, dec) in one band and show it; throws with the service's words. */
  async show({ ra, dec, size, unit, collection, instrument, band, product }) {
    this.clear();
    this.section.hidden = false;
    this.facts.textContent = `Following RA ${ra.toFixed(6)}°, Dec ${dec.toFixed(6)}° in ${band} through every epoch…`;
    const body = query([["SERIES", "stack,lightcurve"], ["RA", String(ra)], ["DEC", String(dec)],
      ["SIZE", String(size)], ["SIZE_UNIT", unit], ["COLLECTION", collection],
      ["INSTRUMENT", instrument], ["BANDNAME", band], ["PRODUCTTYPE", product], ["PHASE", "RUN"],
      ["RUNID", "web time series"]]);
    const created = await authFetch("async", { method: "POST", body,
      headers: { "Content-Type": "application/x-www-form-urlencoded" } });
    if (!created.ok) throw new Error(await errorMessage(created));
    const jobUrl = created.url;
    const jobId = jobUrl.split("/").pop();
    let doc = await xml(jobUrl);
    for (let round = 0; round < 40; round += 1) {
      const phase = texts(doc, "phase")[0]?.textContent;
      if (FINAL.has(phase)) break;
      doc = await xml(`${jobUrl}?WAIT=20`);
    }
    const phase = texts(doc, "phase")[0]?.textContent;
    if (phase !== "COMPLETED") {
      const message = texts(doc, "message")[0]?.textContent || `the job ended in ${phase}`;
      throw new Error(message.replace(/^[A-Za-z]+Error:\s*/, ""));
    }
    const results = resultsOf(doc);
    const epochs = votableRows(await xml(results.epochs));
    this.showStrip(jobId, epochs, results);
    setImageSource(this.plot, results["lightcurve-png"]);
    this.plot.alt = `light curve of RA ${ra.toFixed(5)} Dec ${dec.toFixed(5)}`;
    const withStamp = epochs.filter((row) => row.extname).length;
    this.facts.textContent = `${epochs.length} epoch${epochs.length === 1 ? "" : "s"} of ${band}, ` +
      `${withStamp} with a stamp — job ${jobId}`;
    const links = el("span", { className: "downloads" },
      downloadWithToken(el("a", { href: results.stack, download: "" }, "stack (FITS)")), " ",
      downloadWithToken(el("a", { href: results.lightcurve, download: "" }, "light curve (VOTable)")));
    this.facts.append(" ", links);
  }

  showStrip(jobId, epochs, results) {
    for (const row of epochs) {
      const caption = el("figcaption", {}, `#${row.epoch} ${mjdToDate(row.t_mid)}`);
      const figure = el("figure", { className: "series-epoch" });
      const id = `epoch-${String(row.epoch).padStart(3, "0")}`;
      if (row.extname && results[id]) {
        const img = el("img", { alt: `epoch ${row.epoch}`, title: `MJD ${Number(row.t_mid).toFixed(5)} ${row.status}` });
        setImageSource(img, `api/jobs/${jobId}/thumb/${id}?${query([["SIZE", "120"], ["STRETCH", "asinh"]])}`);
        enlargeOnClick(img, () => ({ title: `Epoch ${row.epoch}, MJD ${Number(row.t_mid).toFixed(5)}`,
          src: img.src, caption: row.image_id, links: [{ href: results[id], text: "FITS" }] }));
        figure.append(img);
        if (row.status !== "ok") caption.append(` (${row.status})`);
      } else {
        figure.append(el("div", { className: "note" }, row.message || row.status));
        caption.append(` ${row.status}`);
      }
      figure.append(caption);
      this.strip.append(figure);
    }
  }
}
