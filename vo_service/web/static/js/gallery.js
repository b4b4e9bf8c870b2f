// A finished job's gallery: one row per target, one column per band x product type,
// thumbnails rendered by the service from the FITS stamps, a colour composite, downloads.
import { downloadWithToken, el, getJSON, query, setImageSource, showError } from "./api.js";
import { highlight, sampButton, sendStamps } from "./handoff.js";
import { enlargeOnClick } from "./viewer.js";

const PAGE = 25;
const THUMB = 112;
const LARGE = 640;

function displayOptions(size) {
  return query([["STRETCH", document.getElementById("stretch").value],
    ["LIMITS", document.getElementById("limits").value],
    ["INVERT", document.getElementById("invert").checked ? "true" : ""], ["SIZE", size]]);
}

/** "FITS", or "FITS 2" when a target has stamps from several overlapping images. */
function linkText(stamp, n, count) {
  const kind = stamp.content_type === "application/fits" ? "FITS" : "PNG";
  return count > 1 ? `${kind} ${n + 1}` : kind;
}

export class Gallery {
  constructor() {
    this.section = document.getElementById("gallery");
    this.table = document.getElementById("gallery-table");
    this.job = null;
    this.offset = 0;
    for (const id of ["download-manifest", "download-bundle"]) {
      downloadWithToken(document.getElementById(id));
    }
    for (const id of ["stretch", "limits", "invert"]) {
      document.getElementById(id).addEventListener("change", () => this.restretch());
    }
  }

  resultUrl(resultId) {
    return `async/${this.job.job_id}/results/${encodeURIComponent(resultId)}`;
  }

  thumbUrl(stamp, size) {
    if (stamp.content_type !== "application/fits") return this.resultUrl(stamp.result_id);
    return `api/jobs/${this.job.job_id}/thumb/${encodeURIComponent(stamp.result_id)}?${displayOptions(size)}`;
  }

  compositeUrl(row, size) {
    return `api/jobs/${this.job.job_id}/composite/${row}?SIZE=${size}`;
  }

  async show(job, offset = 0) {
    this.job = job;
    this.offset = offset;
    if (!job) { this.section.hidden = true; return; }
    this.section.hidden = false;
    document.getElementById("gallery-title").textContent = `Gallery — ${job.run_id || job.job_id}`;
    document.getElementById("download-manifest").href = this.resultUrl("manifest");
    document.getElementById("download-bundle").href = this.resultUrl("bundle");
    showError("error-gallery", "");
    let data;
    try {
      data = await getJSON(`api/jobs/${job.job_id}/gallery?OFFSET=${offset}&LIMIT=${PAGE}`);
    } catch (error) {
      showError("error-gallery", error.message);
      return;
    }
    if (!data.ready) {
      const why = data.phase === "ABORTED" ? "the job was aborted before it wrote a manifest"
        : `the job is ${data.phase} and has no manifest yet`;
      showError("error-gallery", data.error || why);
      this.table.replaceChildren();
      return;
    }
    if (data.error) showError("error-gallery", data.error);
    this.data = data;
    this.render(data);
    this.section.scrollIntoView({ behavior: "smooth" });
  }

  render(data) {
    const composite = data.composite.bands.length === 3;
    const head = el("tr", {}, el("th", { className: "target" }, "Target"),
      composite ? el("th", { className: "colour-head", title: "red · green · blue" },
        el("span", { className: "band" }, "colour"), `${data.composite.bands.join(" · ")}`) : null,
      ...data.columns.map((c) => el("th", {}, el("span", { className: "band" }, c.band), c.product_type)));
    const rows = data.targets.map((target) => this.row(target, data, composite));
    this.table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
    const last = Math.min(data.offset + data.targets.length, data.total_targets);
    document.getElementById("gallery-facts").textContent =
      `targets ${data.total_targets ? data.offset + 1 : 0}–${last} of ${data.total_targets}`;
    this.pager(data);
  }

  row(target, data, composite) {
    const position = target.ra === null ? "" : `${target.ra.toFixed(5)} ${target.dec.toFixed(5)}`;
    const head = el("th", { className: "target" }, el("div", { className: "tid" }, target.target_id),
      el("div", { className: "pos" }, position),
      ...target.notes.map((n) => el("div", { className: `note ${n.status}` }, `${n.status}: ${n.message}`)));
    if (target.ra !== null) head.append(this.handoffButtons(target));
    const cells = [head];
    if (composite) cells.push(this.compositeCell(target, data));
    for (const column of data.columns) cells.push(this.stampCell(target, column));
    const tr = el("tr", {}, ...cells);
    tr.dataset.target = target.target_id;
    return tr;
  }

  /** SAMP: all FITS stamps of a target to image viewers; highlight its manifest row. */
  handoffButtons(target) {
    const stamps = Object.entries(target.cells).flatMap(([key, list]) => list.map((s) => ({
      ...s, band: key.split("|")[0], product_type: key.split("|")[1] })));
    return el("div", { className: "samp-row" },
      sampButton("Stamps → SAMP", "send this target's FITS stamps to Aladin or DS9 (image.load.fits)",
        () => sendStamps(this.job, stamps, target.target_id), "samp-stamps"),
      sampButton("Highlight", "highlight this target in TOPCAT and point Aladin at it "
        + "(table.highlight.row, coord.pointAt.sky)", () => highlight(this.job, target.row), "samp-highlight"));
  }

  compositeCell(target, data) {
    const key = (band) => `${band}|${data.composite.product_type}`;
    const complete = data.composite.bands.every((band) => (target.cells[key(band)] || [])
      .some((s) => s.content_type === "application/fits"));
    if (!complete) return el("td", { className: "nothing" }, "—");
    const img = el("img", { className: "thumb composite", alt: `colour composite of ${target.target_id}`,
      loading: "lazy" });
    setImageSource(img, this.compositeUrl(target.row, THUMB * 2));
    enlargeOnClick(img, () => ({
      title: `${target.target_id} — colour`, src: this.compositeUrl(target.row, LARGE),
      caption: `R ${data.composite.bands[0]} · G ${data.composite.bands[1]} · B ${data.composite.bands[2]} (Lupton asinh)`,
      links: [] }));
    return el("td", {}, img);
  }

  stampCell(target, column) {
    const stamps = target.cells[column.key] || [];
    if (!stamps.length) return el("td", { className: "nothing" }, "—");
    const stamp = stamps[0];
    const cell = el("td", {});
    if (stamp.result_id && !column.band) {
      // a product of the whole tile (a source catalog's rows in the stamp): no picture
      stamps.filter((s) => s.result_id).forEach((s, n) => cell.append(downloadWithToken(
        el("a", { href: this.resultUrl(s.result_id), download: "", className: "rows-link" },
          n ? `rows ${n + 1}` : "rows (FITS)"))));
    } else if (stamp.result_id) {
      const img = el("img", { className: "thumb", alt: `${target.target_id} ${column.band} ${column.product_type}`,
        loading: "lazy" });
      setImageSource(img, this.thumbUrl(stamp, THUMB * 2));
      img.dataset.fits = stamp.content_type === "application/fits" ? "1" : "";
      img.stamp = stamp;
      enlargeOnClick(img, () => ({
        title: `${target.target_id} — ${column.band} ${column.product_type}`,
        src: this.thumbUrl(stamp, LARGE),
        caption: `${stamp.image_id || ""} ${stamp.pixel_box || ""}`,
        links: stamps.filter((s) => s.result_id).map((s, n) => ({
          href: this.resultUrl(s.result_id), text: linkText(s, n, stamps.length) })) }));
      cell.append(img);
      const links = el("div", { className: "cell-links" });
      stamps.filter((s) => s.result_id).forEach((s, n) => links.append(downloadWithToken(
        el("a", { href: this.resultUrl(s.result_id), download: "" }, linkText(s, n, stamps.length)))));
      links.append(sampButton("SAMP", "send this stamp to Aladin or DS9 (image.load.fits)",
        () => sendStamps(this.job, [{ ...stamp, band: column.band, product_type: column.product_type }],
          target.target_id), "samp-stamp"));
      cell.append(links);
    }
    if (stamp.status !== "ok") {
      cell.append(el("span", { className: `tag ${stamp.status}`, title: stamp.message || "" }, stamp.status));
      if (!stamp.result_id && stamp.message) cell.append(el("div", { className: "note error" }, stamp.message));
    }
    return cell;
  }

  restretch() {
    for (const img of this.table.querySelectorAll("img.thumb[data-fits='1']")) {
      setImageSource(img, this.thumbUrl(img.stamp, THUMB * 2));
    }
  }

  pager(data) {
    const box = document.getElementById("gallery-pager");
    box.replaceChildren();
    if (data.total_targets <= data.limit) return;
    const previous = el("button", { type: "button", className: "small", textContent: "← Previous",
      disabled: data.offset === 0, onclick: () => this.show(this.job, Math.max(0, data.offset - PAGE)) });
    const next = el("button", { type: "button", className: "small", textContent: "Next →",
      disabled: data.offset + data.limit >= data.total_targets,
      onclick: () => this.show(this.job, data.offset + PAGE) });
    box.append(previous, next);
  }
}
