// Talking to the service: JSON helpers, and the words of a DALI error document.

/** The message of a failed response: the DALI error VOTable's QUERY_STATUS text, or the
 * text/plain body (/sync), without the standard label ("UsageError: ..."), or the HTTP
 * status when the body says nothing. */
export async function errorMessage(response) {
  const text = await response.text();
  let message = "";
  if ((response.headers.get("content-type") || "").startsWith("text/plain")) {
    message = text.trim();
  } else {
    const doc = new DOMParser().parseFromString(text, "application/xml");
    const info = [...doc.getElementsByTagName("INFO")].find(
      (node) => node.getAttribute("name") === "QUERY_STATUS" && node.getAttribute("value") === "ERROR");
    message = (info ? info.textContent : "").trim();
  }
  if (!message) return `the service answered ${response.status} ${response.statusText}`;
  return message.replace(/^[A-Za-z]+Error:\s*|^MultiValuedParamNotSupported:\s*|^ServiceUnavailable:\s*/, "");
}

const TOKEN_KEY = "vo-service-token";

/** The bearer token pasted into the page ("" when none); kept in this browser only. */
export function token() {
  return window.localStorage.getItem(TOKEN_KEY) || "";
}

/** Remember (or with "" forget) the bearer token in this browser's localStorage. */
export function setToken(value) {
  if (value) window.localStorage.setItem(TOKEN_KEY, value);
  else window.localStorage.removeItem(TOKEN_KEY);
}

/** fetch() with `Authorization: Bearer <token>` when a token is set (no cookies involved). */
export function authFetch(url, options = {}) {
  const value = token();
  if (!value) return fetch(url, options);
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", `Bearer ${value}`);
  return fetch(url, { ...options, headers });
}

/** Show `url` in `img`: directly without a token, else fetched with it as a blob URL. */
export function setImageSource(img, url) {
  if (!token()) {
    img.src = url;
    return;
  }
  authFetch(url).then(async (response) => {
    if (!response.ok) throw new ServiceError(await errorMessage(response));
    if (img.dataset.blob) URL.revokeObjectURL(img.dataset.blob);
    img.dataset.blob = URL.createObjectURL(await response.blob());
    img.src = img.dataset.blob;
  }).catch((error) => { img.alt = error.message; img.title = error.message; });
}

/** Make a download link carry the token: with one set, a click fetches the file and saves
 * the blob under the name the service gives (Content-Disposition). */
export function downloadWithToken(link) {
  link.addEventListener("click", async (event) => {
    if (!token() || link.href.startsWith("blob:")) return;
    event.preventDefault();
    const response = await authFetch(link.href);
    if (!response.ok) {
      link.title = await errorMessage(response);
      return;
    }
    const disposition = response.headers.get("Content-Disposition") || "";
    const name = (disposition.match(/filename="?([^";]+)"?/) || [])[1]
      || link.href.split("/").pop().split("?")[0];
    const saver = el("a", { href: URL.createObjectURL(await response.blob()), download: name });
    document.body.append(saver);
    saver.click();
    saver.remove();
    setTimeout(() => URL.revokeObjectURL(saver.href), 60000);
  });
  return link;
}

/** A thrown error carrying the service's own words. */
export class ServiceError extends Error {}

/** GET (or other) a JSON document; throws ServiceError with the service's message. */
export async function getJSON(url, options = {}) {
  const response = await authFetch(url, options);
  if (!response.ok) throw new ServiceError(await errorMessage(response));
  return response.json();
}

/** Show `message` in the error slot `id` next to its field (empty message hides it). */
export function showError(id, message) {
  const slot = document.getElementById(id);
  if (!slot) return;
  slot.textContent = message || "";
  slot.hidden = !message;
}

/** A new element: el("td", {className: "x"}, child, "text", ...). */
export function el(tag, properties = {}, ...children) {
  const node = Object.assign(document.createElement(tag), properties);
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

/** Query string from [name, value] pairs (repeated names allowed, empty values dropped). */
export function query(pairs) {
  const params = new URLSearchParams();
  for (const [name, value] of pairs) {
    if (value !== null && value !== undefined && value !== "") params.append(name, value);
  }
  return params.toString();
}

/** A pill checkbox or radio: <label><input> text</label>. */
export function pill(type, name, value, checked, text = value) {
  const input = el("input", { type, name, value, checked });
  return el("label", {}, input, text);
}
