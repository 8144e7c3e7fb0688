// The sign-in form: trade the token for an HttpOnly cookie, then load the page that was asked for.

const form = document.getElementById("signin-form");
const error = document.getElementById("signin-error");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  const response = await fetch("/api/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: document.getElementById("token").value.trim() }),
    credentials: "same-origin",
  });
  if (response.status === 204) {
    location.reload();
  } else {
    error.textContent = response.status === 401 ? "Unknown token." : `Sign-in failed (${response.status}).`;
  }
});
