// The enlarged view of one picture, with links to its files.
import { downloadWithToken, el, setImageSource } from "./api.js";

/** Open the dialog with {title, src, caption, links: [{href, text}]}. */
export function openViewer({ title, src, caption, links }) {
  const dialog = document.getElementById("viewer");
  document.getElementById("viewer-title").textContent = title;
  const image = document.getElementById("viewer-image");
  if (src.startsWith("blob:")) image.src = src;
  else setImageSource(image, src);
  document.getElementById("viewer-image").alt = title;
  document.getElementById("viewer-caption").textContent = caption || "";
  document.getElementById("viewer-links").replaceChildren(
    ...links.map((link) => downloadWithToken(
      el("a", { href: link.href, download: "", className: "button" }, link.text))));
  dialog.showModal();
}

/** Make a picture open the viewer on click, and on Enter when focused with the keyboard. */
export function enlargeOnClick(img, view) {
  img.tabIndex = 0;
  img.addEventListener("click", () => openViewer(view()));
  img.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault(); // else the same Enter presses the dialog's focused close button
    openViewer(view());
  });
}
