// The catalog job form: upload and describe a catalog, choose images, submit to /async.
import { authFetch, el, errorMessage, getJSON, pill, showError } from "./api.js";

const FIELD_ERRORS = ["error-catalog", "error-columns", "error-bands", "error-products",
  "error-size", "error-workers", "error-photometry", "error-stitch", "error-submit"];

/** Which error slot a message from the service belongs next to. */
function slotFor(message) {
  if (/^(RA|DEC|ID|SIZE)_COLUMN|no (RA|Dec)/i.test(message)) return "error-columns";
  if (/^UPLOAD|catalog|rows|upload|VOTable|CSV|FITS table/i.test(message)) return "error-catalog";
  if (/^WORKERS/i.test(message)) return "error-workers";
  if (/^STITCH/i.test(message)) return "error-stitch";
  if (/^(PHOTOMETRY|APERTURE|ANNULUS|PSF )/i.test(message)) return "error-photometry";
  if (/^SIZE/i.test(message)) return "error-size";
  if (/^BANDNAME|band/i.test(message)) return "error-bands";
  if (/^PRODUCTTYPE/i.test(message)) return "error-products";
  return "error-submit";
}

function fillColumnSelect(select, columns, chosen, optional) {
  select.replaceChildren();
  if (optional) select.append(el("option", { value: "" }, "(row number)"));
  for (const column of columns) {
    select.append(el("option", { value: column.name, selected: column.name === chosen }, column.name));
  }
  if (!optional && !chosen) select.prepend(el("option", { value: "", selected: true }, "— choose —"));
}

export class CatalogForm {
  constructor(choices, onSubmitted) {
    this.choices = choices;
    this.onSubmitted = onSubmitted;
    this.form = document.getElementById("job-form");
    this.file = document.getElementById("catalog-file");
    this.summary = null;
    this.file.addEventListener("change", () => this.describe());
    this.form.addEventListener("submit", (event) => { event.preventDefault(); this.submit(); });
    document.getElementById("collection").addEventListener("change", () => this.showInstruments());
    const photometry = document.getElementById("photometry");
    photometry.addEventListener("change", () => {
      document.getElementById("apertures").disabled = !photometry.checked;
    });
    this.fillChoices();
  }

  fillChoices() {
    const collection = document.getElementById("collection");
    for (const name of this.choices.collections) collection.append(el("option", { value: name }, name));
    const workers = document.getElementById("workers");
    workers.max = this.choices.limits.max_job_workers;
    workers.value = this.choices.limits.job_workers;
    this.showInstruments();
  }

  instrumentsOfCollection() {
    const collection = document.getElementById("collection").value;
    return this.choices.instruments.filter((i) => i.collection === collection);
  }

  showInstruments() {
    const box = document.getElementById("instruments");
    box.replaceChildren();
    this.instrumentsOfCollection().forEach((instrument, n) => {
      const choice = pill("radio", "INSTRUMENT", instrument.name, n === 0);
      choice.querySelector("input").addEventListener("change", () => this.showBands());
      box.append(choice);
    });
    this.showBands();
  }

  instrument() {
    const name = this.form.querySelector("input[name=INSTRUMENT]:checked")?.value;
    return this.instrumentsOfCollection().find((i) => i.name === name);
  }

  showBands() {
    const instrument = this.instrument();
    const bands = document.getElementById("bands");
    const products = document.getElementById("products");
    bands.replaceChildren();
    products.replaceChildren();
    if (!instrument) return;
    for (const band of instrument.bands) {
      const choice = pill("checkbox", "BANDNAME", band.name, true);
      choice.dataset.products = band.product_types.join(" ");
      choice.title = `products: ${band.product_types.join(", ")}`;
      bands.append(choice);
    }
    const defaults = this.choices.default_product_types;
    for (const product of instrument.product_types) {
      const choice = pill("checkbox", "PRODUCTTYPE", product, defaults.includes(product));
      choice.querySelector("input").addEventListener("change", () => this.matchBands());
      products.append(choice);
    }
    // source catalogs of whole tiles: no band, offered with every instrument
    for (const product of this.choices.catalog_product_types || []) {
      const choice = pill("checkbox", "PRODUCTTYPE", product, false);
      choice.title = "the rows of the tile's source catalog inside each stamp";
      products.append(choice);
    }
    this.matchBands();
  }

  /** Bands that have none of the ticked product types cannot give stamps: disable them. */
  matchBands() {
    const ticked = [...this.form.querySelectorAll("input[name=PRODUCTTYPE]:checked")].map((i) => i.value);
    for (const choice of document.querySelectorAll("#bands label")) {
      const usable = choice.dataset.products.split(" ").some((p) => ticked.includes(p));
      choice.querySelector("input").disabled = !usable;
      choice.classList.toggle("unusable", !usable);
    }
  }

  async describe() {
    FIELD_ERRORS.forEach((id) => showError(id, ""));
    this.summary = null;
    document.getElementById("catalog-summary").hidden = true;
    const file = this.file.files[0];
    document.getElementById("catalog-file-text").textContent = file
      ? `${file.name} (${(file.size / 1024).toFixed(1)} kB)` : "Choose a catalog file";
    if (!file) return;
    const body = new FormData();
    body.append("catalog", file, file.name);
    try {
      this.summary = await getJSON("api/catalog", { method: "POST", body });
    } catch (error) {
      showError("error-catalog", error.message);
      return;
    }
    this.showSummary(this.summary);
  }

  showSummary(summary) {
    const facts = document.getElementById("catalog-facts");
    facts.replaceChildren(el("b", {}, `${summary.n_rows}`), ` row${summary.n_rows === 1 ? "" : "s"}, `,
      el("b", {}, `${summary.columns.length}`), ` columns (${summary.format.toUpperCase()})`);
    fillColumnSelect(document.getElementById("ra-column"), summary.columns, summary.ra_column, false);
    fillColumnSelect(document.getElementById("dec-column"), summary.columns, summary.dec_column, false);
    // Without a recognised ID column the service numbers the rows; with one, the user may
    // only pick another column (an empty ID_COLUMN means "detect" to /async).
    fillColumnSelect(document.getElementById("id-column"), summary.columns, summary.id_column,
      !summary.id_column);
    const list = document.getElementById("catalog-columns");
    list.replaceChildren(...summary.columns.map((c) => el("li", {}, c.name, " ",
      el("span", { className: "meta" }, [c.datatype, c.unit, c.ucd].filter(Boolean).join(" · ")))));
    document.getElementById("catalog-summary").hidden = false;
    if (!summary.ra_column || !summary.dec_column) {
      showError("error-columns", "no RA/Dec column was recognised; choose them above");
    }
  }

  /** Problems the page can see before asking the service; true when there are none. */
  check() {
    let fine = true;
    if (!this.file.files[0]) { showError("error-catalog", "choose a catalog file to upload"); fine = false; }
    if (!this.form.querySelector("input[name=BANDNAME]:checked:not(:disabled)")) {
      showError("error-bands", "no band chosen: tick at least one band"); fine = false;
    }
    if (!this.form.querySelector("input[name=PRODUCTTYPE]:checked")) {
      showError("error-products", "no product type chosen: tick at least one"); fine = false;
    }
    return fine;
  }

  async submit() {
    FIELD_ERRORS.filter((id) => id !== "error-catalog" || this.file.files[0])
      .forEach((id) => showError(id, ""));
    if (!this.check()) return;
    const file = this.file.files[0];
    const body = new FormData();
    body.append("UPLOAD", "catalog,param:catalog");
    body.append("catalog", file, file.name);
    body.append("RUNID", file.name.slice(0, 64));
    body.append("PHASE", "RUN");
    for (const [name, value] of new FormData(this.form)) {
      if (name !== "catalog" && value !== "") body.append(name, value);
    }
    if (!body.getAll("PRODUCTTYPE").includes("CATALOG-PSF")) body.delete("PSF");
    if (body.get("STITCH") === "none") body.delete("STITCH"); // the service's default
    const button = document.getElementById("submit-job");
    button.disabled = true;
    try {
      const response = await authFetch("async", { method: "POST", body });
      if (!response.ok) {
        const message = await errorMessage(response);
        showError(slotFor(message), message);
        return;
      }
      this.onSubmitted(response.url.split("/").pop());
    } catch (error) {
      showError("error-submit", `the request failed: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }
}
