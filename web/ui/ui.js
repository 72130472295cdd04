// Helpers shared by the dashboard's scripts (app.js, charts.js): loaded first, same origin, no dependencies.
// Everything from the server is rendered with textContent, never as HTML.
"use strict";

window.ProvisioningUi = (function () {
  const TOKEN_KEY = "provisioning.accessToken";
  const byId = (id) => document.getElementById(id);

  // An element with attributes ("class", "text" as textContent, the rest as attributes; null/undefined left
  // out) and children (nodes, or values shown as text).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // The dashboard's access token (kept in sessionStorage), or null.
  const token = () => sessionStorage.getItem(TOKEN_KEY);
  const setToken = (value) => sessionStorage.setItem(TOKEN_KEY, value);
  const forgetToken = () => sessionStorage.removeItem(TOKEN_KEY);

  return { TOKEN_KEY: TOKEN_KEY, byId: byId, el: el, token: token, setToken: setToken, forgetToken: forgetToken };
})();
