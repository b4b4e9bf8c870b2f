// The web page: load what the archive offers, then wire the forms, job list and gallery.
import { getJSON, showError } from "./api.js";
import { CatalogForm } from "./catalog-form.js";
import { Gallery } from "./gallery.js";
import { JobList } from "./jobs.js";
import { QuickForm } from "./quick.js";

async function start() {
  let choices;
  try {
    choices = await getJSON("api/facets");
  } catch (error) {
    showError("error-submit", `cannot load the archive's choices: ${error.message}`);
    return;
  }
  const gallery = new Gallery();
  const jobs = new JobList((job) => gallery.show(job));
  new CatalogForm(choices, (jobId) => jobs.follow(jobId));
  new QuickForm(choices);
  jobs.refresh();
  document.body.dataset.ready = "true";
}

start();
