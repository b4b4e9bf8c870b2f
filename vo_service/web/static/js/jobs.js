// The job list: every job with its phase and a live progress bar; abort, delete, open.
import { authFetch, el, errorMessage, getJSON, showError } from "./api.js";
import { sampButton, sendManifest } from "./handoff.js";

const ACTIVE = new Set(["PENDING", "QUEUED", "EXECUTING", "HELD"]);
const FINISHED_WITH_RESULTS = new Set(["COMPLETED", "ABORTED", "ERROR"]);
const FAST_POLL_MS = 700;
const SLOW_POLL_MS = 5000;

function selection(parameters) {
  const parts = [];
  if (parameters.INSTRUMENT) parts.push(parameters.INSTRUMENT.join(", "));
  if (parameters.BANDNAME) parts.push(parameters.BANDNAME.join(" "));
  if (parameters.PRODUCTTYPE) parts.push(parameters.PRODUCTTYPE.join(" "));
  if (parameters.SIZE) parts.push(`${parameters.SIZE[0]} ${(parameters.SIZE_UNIT || ["pix"])[0]}`);
  return parts.join(" · ") || "—";
}

function progressBar(progress) {
  const fraction = progress.total > 0 ? progress.done / progress.total : 0;
  const bar = el("div", { className: "bar", role: "progressbar" },
    el("span", { style: `width: ${(100 * fraction).toFixed(1)}%` }));
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", String(progress.total));
  bar.setAttribute("aria-valuenow", String(progress.done));
  const text = progress.total > 0 ? `${progress.done} / ${progress.total} done` : "waiting";
  return el("div", {}, bar, el("span", { className: "bar-text" }, text));
}

export class JobList {
  constructor(onOpen) {
    this.onOpen = onOpen;
    this.body = document.getElementById("job-rows");
    this.selected = null;
    this.openWhenDone = null;
    this.timer = null;
    document.getElementById("refresh-jobs").addEventListener("click", () => this.refresh());
  }

  /** A job just created from the page: show it and open its gallery when it finishes. */
  follow(jobId) {
    this.openWhenDone = jobId;
    this.refresh();
    document.getElementById("jobs").scrollIntoView({ behavior: "smooth" });
  }

  async refresh() {
    clearTimeout(this.timer);
    let jobs = [];
    try {
      jobs = (await getJSON("api/jobs")).jobs;
      showError("error-jobs", "");
    } catch (error) {
      showError("error-jobs", error.message);
    }
    this.render(jobs);
    const followed = jobs.find((job) => job.job_id === this.openWhenDone);
    if (followed && FINISHED_WITH_RESULTS.has(followed.phase)) {
      this.openWhenDone = null;
      this.open(followed);
    }
    const busy = jobs.some((job) => ACTIVE.has(job.phase));
    this.timer = setTimeout(() => this.refresh(), busy ? FAST_POLL_MS : SLOW_POLL_MS);
  }

  render(jobs) {
    if (!jobs.length) {
      this.body.replaceChildren(el("tr", {}, el("td", { colSpan: 6, className: "muted" }, "No jobs yet.")));
      return;
    }
    this.body.replaceChildren(...jobs.map((job) => this.row(job)));
  }

  row(job) {
    const actions = el("td", { className: "actions-cell" });
    if (FINISHED_WITH_RESULTS.has(job.phase) && job.kind === "batch") {
      actions.append(el("button", { type: "button", className: "small", textContent: "Gallery",
        onclick: () => this.open(job) }));
      actions.append(sampButton("→ SAMP", "send the manifest to TOPCAT (table.load.votable)",
        () => sendManifest(job), "samp-manifest-row"));
    }
    if (ACTIVE.has(job.phase)) {
      actions.append(el("button", { type: "button", className: "small danger", textContent: "Abort",
        onclick: () => this.act(job, "phase", "PHASE=ABORT") }));
    }
    actions.append(el("button", { type: "button", className: "small danger", textContent: "Delete",
      onclick: () => this.act(job, "", null) }));
    const created = job.creation_time.replace("T", " ").replace(/\.\d+Z$/, " UTC");
    const tr = el("tr", { className: job.job_id === this.selected ? "selected" : "" },
      el("td", {}, el("div", { className: "name" }, job.run_id || job.kind),
        el("div", { className: "id" }, job.job_id)),
      el("td", { className: "muted" }, created),
      el("td", {}, selection(job.parameters)),
      el("td", {}, el("span", { className: `phase ${job.phase}` }, job.phase),
        job.error ? el("div", { className: "job-error" }, job.error) : null),
      el("td", {}, progressBar(job.progress)),
      actions);
    tr.dataset.jobId = job.job_id;
    tr.dataset.phase = job.phase;
    return tr;
  }

  /** ABORT (POST PHASE=ABORT to the job's /phase) or DELETE the job, through UWS. */
  async act(job, resource, form) {
    const url = `async/${job.job_id}${resource ? `/${resource}` : ""}`;
    const options = form === null ? { method: "DELETE" }
      : { method: "POST", body: new URLSearchParams(form) };
    const response = await authFetch(url, options);
    if (!response.ok) showError("error-jobs", await errorMessage(response));
    if (form === null && this.selected === job.job_id) this.onOpen(null);
    this.refresh();
  }

  open(job) {
    this.selected = job ? job.job_id : null;
    for (const tr of this.body.querySelectorAll("tr")) {
      tr.classList.toggle("selected", tr.dataset.jobId === this.selected);
    }
    this.onOpen(job);
  }
}
