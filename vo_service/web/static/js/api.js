// Talking to the service: JSON helpers, and the words of a DALI error document.

/** The message of a failed response: the DALI error VOTable's QUERY_STATUS text, without
 * the standard label ("UsageError: ..."), or the HTTP status when the body says nothing. */
export async function errorMessage(response) {
  const text = await response.text();
  const doc = new DOMParser().parseFromString(text, "application/xml");
  const info = [...doc.getElementsByTagName("INFO")].find(
    (node) => node.getAttribute("name") === "QUERY_STATUS" && node.getAttribute("value") === "ERROR");
  const message = (info ? info.textContent : "").trim();
  if (!message) return `the service answered ${response.status} ${response.statusText}`;
  return message.replace(/^[A-Za-z]+Error:\s*|^MultiValuedParamNotSupported:\s*|^ServiceUnavailable:\s*/, "");
}

/** A thrown error carrying the service's own words. */
export class ServiceError extends Error {}

/** GET (or other) a JSON document; throws ServiceError with the service's message. */
export async function getJSON(url, options = {}) {
  const response = await fetch(url, options);
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
