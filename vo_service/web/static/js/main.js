// The web page: load what the archive offers, then wire the forms, job list and gallery.
import { getJSON, setToken, showError, token } from "./api.js";
import { CatalogForm } from "./catalog-form.js";
import { Gallery } from "./gallery.js";
import { showJobLinks, wireGallery } from "./handoff.js";
import { JobList } from "./jobs.js";
import { QuickForm } from "./quick.js";
import { SkyView } from "./sky.js";

/** The token field: a pasted token is kept in localStorage and sent with every request. */
function wireToken() {
  const state = document.getElementById("token-state");
  state.textContent = token() ? "token set (kept in this browser only)" : "";
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const field = document.getElementById("token");
    setToken(field.value.trim());
    field.value = "";
    window.location.reload();
  });
}

async function start() {
  wireToken();
  let choices;
  try {
    choices = await getJSON("api/facets");
  } catch (error) {
    showError("error-submit", `cannot load the archive's choices: ${error.message}`);
    return;
  }
  const gallery = new Gallery();
  const sky = new SkyView();
  sky.setChoices(choices);
  wireGallery(() => gallery.job);
  const jobs = new JobList((job) => {
    gallery.show(job);
    showJobLinks(job);
    sky.showJob(job);
  });
  window.voSky = sky; // for the browser tests and the curious
  new CatalogForm(choices, (jobId) => jobs.follow(jobId));
  new QuickForm(choices);
  jobs.refresh();
  document.body.dataset.ready = "true";
}

start();
