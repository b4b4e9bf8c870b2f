// The enlarged view of one picture, with links to its files.
import { el } from "./api.js";

/** Open the dialog with {title, src, caption, links: [{href, text}]}. */
export function openViewer({ title, src, caption, links }) {
  const dialog = document.getElementById("viewer");
  document.getElementById("viewer-title").textContent = title;
  document.getElementById("viewer-image").src = src;
  document.getElementById("viewer-image").alt = title;
  document.getElementById("viewer-caption").textContent = caption || "";
  document.getElementById("viewer-links").replaceChildren(
    ...links.map((link) => el("a", { href: link.href, download: "", className: "button" }, link.text)));
  dialog.showModal();
}
