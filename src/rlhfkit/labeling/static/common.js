// Shared by the pages: calls to the JSON API, and DOM nodes built from untrusted text.

let csrfToken = "";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// A JSON API call; null for 204. A 401 means the sign-in is gone: reloading shows the sign-in page.
export async function request(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (response.status === 401) {
    location.reload();
    throw new ApiError(401, "signed out");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    throw new ApiError(response.status, detail || response.statusText);
  }
  return data;
}

// Who is signed in; also keeps the CSRF token that changing requests must send.
export async function whoami() {
  const me = await request("GET", "/api/me");
  csrfToken = me.csrf_token;
  return me;
}

export async function signOut() {
  await request("DELETE", "/api/session");
  location.href = "/";
}

// An element whose text is set with textContent: never parsed as HTML.
export function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

export function showStatus(message, isError = false) {
  const status = document.getElementById("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}
