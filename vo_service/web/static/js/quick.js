// The single-target form: images at one position from /api/images, cutouts from SODA /sync.
import {
  authFetch, downloadWithToken, el, errorMessage, getJSON, pill, query, showError,
} from "./api.js";
import { TimeSeriesView } from "./timeseries.js";
import { enlargeOnClick } from "./viewer.js";

function radiusDegrees(size, unit, image) {
  const arcsec = unit === "arcsec" ? size : size * (image.pixel_scale_arcsec || 1);
  return arcsec / 3600 / 2;
}

export class QuickForm {
  constructor(choices) {
    this.instruments = choices.instruments;
    this.choices = choices;
    this.form = document.getElementById("quick-form");
    const select = document.getElementById("quick-instrument");
    this.instruments.forEach((instrument, n) => select.append(
      el("option", { value: String(n) }, instrument.name)));
    select.addEventListener("change", () => this.showBands());
    this.form.addEventListener("submit", (event) => { event.preventDefault(); this.submit(); });
    this.series = new TimeSeriesView();
    this.showBands();
  }

  instrument() {
    return this.instruments[Number(document.getElementById("quick-instrument").value || 0)];
  }

  showBands() {
    const instrument = this.instrument();
    const bands = document.getElementById("quick-bands");
    const product = document.getElementById("quick-product");
    bands.replaceChildren();
    product.replaceChildren();
    if (!instrument) return;
    for (const band of instrument.bands) {
      if (band.product_types.some((p) => p !== "CUBE")) bands.append(pill("checkbox", "QBAND", band.name, true));
    }
    // PNG cutouts of images: not of cubes, nor of PSF models (a PSF is answered as FITS)
    const psfs = this.choices.psf_product_types || [];
    for (const name of instrument.product_types.filter((p) => p !== "CUBE" && !psfs.includes(p))) {
      product.append(el("option", { value: name, selected: name === "BGSUB" }, name));
    }
  }

  async submit() {
    showError("error-quick-pos", "");
    showError("error-quick-bands", "");
    const results = document.getElementById("quick-results");
    results.replaceChildren();
    this.series.clear();
    showError("error-quick-series", "");
    const position = document.getElementById("quick-pos").value.trim();
    const bands = [...this.form.querySelectorAll("input[name=QBAND]:checked")].map((i) => i.value);
    if (!position) showError("error-quick-pos", "give a position: 'ra dec' in degrees or sexagesimal");
    if (!bands.length) showError("error-quick-bands", "no band chosen: tick at least one band");
    if (!position || !bands.length) return;
    const instrument = this.instrument();
    const pairs = [["POS", position], ["COLLECTION", instrument.collection],
      ["INSTRUMENT", instrument.name], ["PRODUCTTYPE", document.getElementById("quick-product").value],
      ...bands.map((band) => ["BANDNAME", band])];
    let found;
    try {
      found = await getJSON(`api/images?${query(pairs)}`);
    } catch (error) {
      showError("error-quick-pos", error.message);
      return;
    }
    const facts = document.getElementById("quick-facts");
    facts.hidden = false;
    facts.textContent = `RA ${found.ra.toFixed(6)}°, Dec ${found.dec.toFixed(6)}° — ` +
      `${found.images.length} image${found.images.length === 1 ? "" : "s"} of ${instrument.name}`;
    if (!found.images.length) {
      showError("error-quick-pos", `no ${instrument.name} image of the chosen bands contains this position`);
      return;
    }
    for (const band of bands) {
      const image = found.images.find((i) => i.band === band);
      results.append(image ? this.figure(found, image) : el("figure", {},
        el("div", { className: "note" }, "outside every image"), el("figcaption", {}, band)));
    }
    if (document.getElementById("quick-series").checked) this.timeSeries(found, instrument, bands[0]);
  }

  async timeSeries(found, instrument, band) {
    showError("error-quick-series", "");
    try {
      await this.series.show({ ra: found.ra, dec: found.dec,
        size: Number(document.getElementById("quick-size").value),
        unit: document.getElementById("quick-unit").value, collection: instrument.collection,
        instrument: instrument.name, band, product: document.getElementById("quick-product").value });
    } catch (error) {
      showError("error-quick-series", error.message);
    }
  }

  figure(found, image) {
    const size = Number(document.getElementById("quick-size").value);
    const unit = document.getElementById("quick-unit").value;
    const circle = `${found.ra} ${found.dec} ${radiusDegrees(size, unit, image)}`;
    const base = [["ID", image.id], ["CIRCLE", circle]];
    const png = `sync?${query([...base, ["RESPONSEFORMAT", "image/png"], ["STRETCH", "asinh"]])}`;
    const fits = `sync?${query([...base, ["RESPONSEFORMAT", "application/fits"]])}`;
    const figure = el("figure", {});
    const caption = el("figcaption", {}, `${image.band} `, downloadWithToken(el("a", { href: fits, download: "" }, "FITS")));
    this.load(png, figure, caption, image);
    return figure;
  }

  async load(url, figure, caption, image) {
    const response = await authFetch(url);
    if (response.status === 204) {
      figure.append(el("div", { className: "note" }, "no overlap"), caption);
      return;
    }
    if (!response.ok) {
      figure.append(el("div", { className: "note error" }, await errorMessage(response)), caption);
      return;
    }
    const src = URL.createObjectURL(await response.blob());
    const img = el("img", { src, alt: `${image.band} cutout` });
    enlargeOnClick(img, () => ({ title: `${image.band} ${image.product_type}`, src,
      caption: image.id, links: [{ href: caption.querySelector("a").href, text: "FITS" }] }));
    figure.append(img, caption);
  }
}
